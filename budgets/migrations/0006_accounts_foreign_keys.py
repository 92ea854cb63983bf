"""The foreign keys to teams and keys now name accounts' models; same tables, so state only.
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0001_initial'),
        ('budgets', '0005_usage_leaner_indexes'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name='budget',
                    name='api_key',
                    field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, related_name='budgets', to='accounts.apikey'),
                ),
                migrations.AlterField(
                    model_name='budget',
                    name='team',
                    field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, related_name='budgets', to='accounts.team'),
                ),
                migrations.AlterField(
                    model_name='ratelimit',
                    name='api_key',
                    field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, related_name='rate_limits', to='accounts.apikey'),
                ),
                migrations.AlterField(
                    model_name='ratelimit',
                    name='team',
                    field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, related_name='rate_limits', to='accounts.team'),
                ),
                migrations.AlterField(
                    model_name='usage',
                    name='api_key',
                    field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='accounts.apikey'),
                ),
                migrations.AlterField(
                    model_name='usage',
                    name='team',
                    field=models.ForeignKey(blank=True, db_index=False, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='accounts.team'),
                ),
            ],
            database_operations=[],
        ),
    ]
