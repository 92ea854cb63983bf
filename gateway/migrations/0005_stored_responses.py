"""Responses API answers kept per team (POST /v1/responses with store)."""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0001_initial'),
        ('gateway', '0004_accounts_models_moved'),
    ]

    operations = [
        migrations.CreateModel(
            name='StoredResponse',
            fields=[
                ('id', models.CharField(max_length=64, primary_key=True, serialize=False)),
                ('created_at', models.DateTimeField(db_index=True, default=django.utils.timezone.now)),
                ('previous_response_id', models.CharField(blank=True, max_length=64)),
                ('input_items', models.JSONField(default=list)),
                ('body', models.JSONField()),
                ('team', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='stored_responses', to='accounts.team')),
            ],
        ),
    ]
