"""The group "Note editors": grants demo.delete_note and demo.view_note (the delete_note tool, notes://mine)."""

from typing import Any

from django.db import migrations


def create_group(apps: Any, schema_editor: Any) -> None:
    # Django makes permissions after all migrations ran; the two the group needs are made now, as it would.
    content_type, _ = apps.get_model("contenttypes", "ContentType").objects.get_or_create(
        app_label="demo", model="note"
    )
    permission = apps.get_model("auth", "Permission")
    granted = [
        permission.objects.get_or_create(
            content_type=content_type, codename=f"{action}_note", defaults={"name": f"Can {action} note"}
        )[0]
        for action in ("delete", "view")
    ]
    group, _ = apps.get_model("auth", "Group").objects.get_or_create(name="Note editors")
    group.permissions.add(*granted)


def remove_group(apps: Any, schema_editor: Any) -> None:
    apps.get_model("auth", "Group").objects.filter(name="Note editors").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("demo", "0001_note"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_group, remove_group)]
