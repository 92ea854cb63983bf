"""Forms of the tools pages: servers (with write-only secrets), a tool's settings,
allow-lists, a persona's tools."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError

from accounts.models import ApiKey, Team
from dashboard.forms import ParamsField
from tools.models import PersonaTools, Tool, ToolServer
from tools.server_config import secrets_parse


class WriteOnlyTextarea(forms.Textarea):
    """Never renders a value: a form sent back with errors does not echo the secrets typed into it."""

    def format_value(self, value):
        return None


class ToolServerForm(forms.ModelForm):
    url = forms.URLField(required=False, max_length=500, assume_scheme="https", label="URL (HTTP)",
                         help_text="The server's streamable HTTP endpoint, e.g. https://tools.example.com/mcp.")
    command = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false"}),
        label="Command (stdio)",
        help_text="One argument per line, e.g. npx / -y / @modelcontextprotocol/server-github. Run without a "
                  "shell, with only PATH, HOME, USER, LOGNAME, SHELL, TERM and the secrets below as its environment.")
    secrets = forms.CharField(
        required=False, strip=True, label="Secrets (JSON)",
        widget=WriteOnlyTextarea(attrs={"rows": 2, "spellcheck": "false", "autocomplete": "off"}),
        help_text='Write-only, encrypted: HTTP headers for an HTTP server ({"Authorization": "Bearer ..."}), '
                  'environment variables for a stdio server ({"GITHUB_TOKEN": "..."}). Leave empty to keep the '
                  "stored ones.")
    clear_secrets = forms.BooleanField(required=False, label="Remove the stored secrets")
    options = ParamsField(label="Options (JSON)", help_text='e.g. {"connect_timeout": 5} or, for stdio, '
                                                            '{"cwd": "/srv/tools"}.')

    class Meta:
        model = ToolServer
        fields = ["name", "kind", "url", "command", "secrets", "clear_secrets", "enabled", "timeout_seconds",
                  "max_result_bytes", "options"]
        labels = {"url": "URL (HTTP)", "timeout_seconds": "Timeout per call (s)",
                  "max_result_bytes": "Longest result (bytes)"}

    # What a server runs or where it sends its secrets and every tool call's arguments: an
    # operator who could set these could run code on the gateway host or exfiltrate data
    # (as a provider's base URL: docs/SECURITY.md). A stdio server's environment
    # (LD_PRELOAD, NODE_OPTIONS) is code too.
    ADMIN_ONLY = ("url", "command", "options")

    def __init__(self, *args, user=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.is_admin = bool(user is not None and user.is_superuser)
        self.fields["kind"].choices = [c for c in ToolServer.KINDS if c[0] != "builtin"]
        # dashboard.js shows each only for its kind (without the script both show).
        self.fields["url"].widget.attrs["data-kinds"] = "http"
        self.fields["command"].widget.attrs["data-kinds"] = "stdio"
        self.initial["command"] = "\n".join(self.instance.command or [])
        if self.instance.pk:
            for name in ("name", "kind"):  # the namespace of its tools, in grants and personas
                self.fields[name].disabled = True
        if not self.is_admin:
            locked = self.ADMIN_ONLY + (("secrets", "clear_secrets") if self.instance.kind == "stdio" else ())
            for name in locked:
                field = self.fields[name]
                field.disabled = True
                field.help_text = "Only an admin may change this."
                self.initial[name] = field.prepare_value(self.initial.get(name, field.initial))
        if not self.instance.secrets_encrypted:
            del self.fields["clear_secrets"]

    def clean_command(self) -> list[str]:
        value = self.cleaned_data.get("command")
        if isinstance(value, list):  # a disabled field: its initial value
            return value
        return [line.strip() for line in (value or "").splitlines() if line.strip()]

    def clean_secrets(self) -> dict[str, str]:
        try:
            return secrets_parse(self.cleaned_data.get("secrets") or "")
        except ValidationError as error:
            raise forms.ValidationError(error.messages) from None

    def clean(self) -> dict:
        data = super().clean()
        data.setdefault("clear_secrets", False)
        return data


class ToolSettingsForm(forms.Form):
    enabled = forms.BooleanField(required=False)
    rate_limit_per_minute = forms.IntegerField(required=False, min_value=0, label="Calls per minute per team",
                                               help_text="Empty: no limit.")


def _patterns(text: str) -> list[str]:
    patterns = [p.strip() for p in text.replace(",", "\n").splitlines() if p.strip()]
    for pattern in patterns:
        if "__" not in pattern and pattern != "*":
            raise forms.ValidationError(f"'{pattern}' is not a qualified tool name: write <server>__<tool>, "
                                        "e.g. builtin__* or github__search_issues.")
    return patterns


class ToolGrantForm(forms.Form):
    team = forms.ModelChoiceField(queryset=Team.objects.order_by("name"), required=False)
    api_key = forms.ModelChoiceField(queryset=ApiKey.objects.select_related("team").order_by("team__name", "name"),
                                     required=False, label="or one API key",
                                     help_text="A key's own list narrows its team's; it never widens it.")
    patterns = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false"}),
                               label="Allowed tools",
                               help_text="One pattern per line: builtin__*, github__search_issues. Empty removes "
                                         "the list (a team without one has no tools).")

    def clean_patterns(self) -> list[str]:
        return _patterns(self.cleaned_data.get("patterns") or "")

    def clean(self) -> dict:
        data = super().clean()
        if bool(data.get("team")) == bool(data.get("api_key")):
            raise forms.ValidationError("Choose a team or an API key (one of them).")
        return data


class PersonaToolsForm(forms.ModelForm):
    tools = forms.ModelMultipleChoiceField(
        queryset=Tool.objects.filter(approved=True, missing_since__isnull=True).select_related("server"),
        required=False, widget=forms.CheckboxSelectMultiple, label="Tools it offers its model",
        help_text="Approved tools only. A caller still needs the tool in its key's allow-list.")

    class Meta:
        model = PersonaTools
        fields = ["tools", "execute", "max_steps", "max_tool_seconds", "max_cost_usd"]
        labels = {"execute": "Run tool calls on the platform", "max_steps": "Most model calls in one loop",
                  "max_tool_seconds": "Most tool time in one loop (s)", "max_cost_usd": "Most cost of one loop (USD)"}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["tools"].label_from_instance = lambda tool: tool.qualified_name
