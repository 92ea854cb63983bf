"""`manage.py bootstrap` records the built-in tools, and an upgrade's new ones."""

import io

from django.core.management import call_command

from tools.models import Tool
from tools.servers.builtin import BUILTIN_TOOLS


def test_bootstrap_records_every_builtin_tool_approved_and_catches_up_after_an_upgrade(db):
    call_command("bootstrap", stdout=io.StringIO())
    tools = Tool.objects.filter(server__name="builtin")
    assert set(tools.values_list("name", flat=True)) == set(BUILTIN_TOOLS) and all(t.approved for t in tools)
    Tool.objects.filter(name="calculator").delete()  # as if the previous version had no calculator
    call_command("bootstrap", stdout=io.StringIO())
    assert Tool.objects.get(server__name="builtin", name="calculator").approved
