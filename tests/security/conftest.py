"""The dashboard's people (olive the operator, ada the admin, rita and bruno
the team leads, max a member) for the security tests too."""

from tests.dashboard.conftest import password_hash, people  # noqa: F401
