"""The group "Note editors": grants demo.delete_note and demo.view_note (the delete_note tool, notes://mine)."""

from typing import Any

from django.contrib.auth.management import create_permissions
from django.db import migrations


def create_group(apps: Any, schema_editor: Any) -> None:
    # Permissions are made after migrations run; made now, so the group can have them.
    create_permissions(apps.get_app_config("demo"), apps=apps, verbosity=0)
    group, _ = apps.get_model("auth", "Group").objects.get_or_create(name="Note editors")
    permission = apps.get_model("auth", "Permission")
    group.permissions.add(
        *permission.objects.filter(content_type__app_label="demo", codename__in=["delete_note", "view_note"])
    )


def remove_group(apps: Any, schema_editor: Any) -> None:
    apps.get_model("auth", "Group").objects.filter(name="Note editors").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("demo", "0001_note"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_group, remove_group)]
