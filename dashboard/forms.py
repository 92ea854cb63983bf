"""Dashboard forms of the gateway core: keys, teams, memberships."""

from __future__ import annotations

from django import forms
from django.contrib.auth import get_user_model

from accounts.models import SCOPES, Membership, Team


class KeyForm(forms.Form):
    team = forms.ModelChoiceField(queryset=Team.objects.order_by("name"))
    name = forms.CharField(max_length=100, help_text="Who uses it, e.g. 'hive production'.")
    scopes = forms.MultipleChoiceField(
        choices=[(s, s) for s in SCOPES], initial=["chat"], widget=forms.CheckboxSelectMultiple,
        help_text="chat: call personas; direct: also name provider/model; admin: the management API.",
    )


class TeamForm(forms.ModelForm):
    class Meta:
        model = Team
        fields = ["name"]


class MembershipForm(forms.Form):
    team = forms.ModelChoiceField(queryset=Team.objects.order_by("name"))
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=Membership.ROLES)

    def clean_username(self) -> str:
        username = self.cleaned_data["username"]
        if not get_user_model().objects.filter(username=username).exists():
            raise forms.ValidationError(f"There is no user '{username}'. Create the user in Django admin first.")
        return username
