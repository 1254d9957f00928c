from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("trainer", "0005_device_precision_imported"),
    ]

    operations = [
        migrations.AlterField(
            model_name="datasetversion",
            name="kind",
            field=models.CharField(
                choices=[
                    ("pretrain", "Pre-training (generative, from dialogs)"),
                    ("quality_safety", "Quality and safety (discriminators + filtered generation)"),
                    ("groundedness", "Groundedness (research formats, from rewrites)"),
                    ("filtered", "Filtered pre-training dialogs (generative, kept by the discriminators)"),
                    ("preference", "Preference (chosen/rejected pairs and KTO rows, from crowd work)"),
                ],
                max_length=16,
            ),
        ),
        migrations.AlterField(
            model_name="trainingjob",
            name="kind",
            field=models.CharField(
                choices=[
                    ("pretrain", "Pre-train (a new model)"),
                    ("finetune_quality_safety", "Fine-tune: quality and safety"),
                    ("finetune_groundedness", "Fine-tune: groundedness"),
                    ("finetune_preference", "Fine-tune: preferences (DPO)"),
                ],
                max_length=24,
            ),
        ),
    ]
