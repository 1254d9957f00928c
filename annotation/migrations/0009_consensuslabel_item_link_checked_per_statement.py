"""ConsensusLabel's link to its item: checked once per statement instead of once per label.

A foreign key checks each new row on its own, a query per label: of the 1.2 s a campaign's first
consensus computation took to write 200k labels, 0.75 s. The constraint is replaced by triggers
that keep its guarantees, the same on PostgreSQL and SQLite:

- a label names an item that exists: on PostgreSQL checked once per INSERT statement over all its
  rows (one join), the items locked as a foreign key locks them (FOR KEY SHARE: not deleted and
  their id not changed until the transaction ends); on SQLite, row by row. Also when a label's
  item changes (never done: a label is recomputed, not moved);
- an item that has labels is not deleted, nor its id changed (Django deletes an item's labels
  before the item: ``on_delete=CASCADE``).

Violations raise the database's integrity error (SQLSTATE 23503 on PostgreSQL, as a foreign key
does), naming the item. The checks are immediate, where Django's foreign keys are deferred to the
commit: nothing writes a label before its item, nor deletes an item before its labels.

SQLite drops a table's triggers when Django rebuilds the table (``_remake_table``, for a later
change to ``Item`` or ``ConsensusLabel``): such a migration must create them again (``TRIGGERS``);
tests/annotation/test_consensus.py checks the link on both databases.
"""

import django.db.models.deletion
from django.db import migrations, models

POSTGRESQL = [
    """
    CREATE FUNCTION annotation_consensuslabel_items_exist() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        named bigint;
        found bigint;
        missing bigint;
    BEGIN
        SELECT count(DISTINCT item_id) INTO named FROM new_labels;
        SELECT count(*) INTO found FROM (
            SELECT 1 FROM annotation_item i WHERE i.id IN (SELECT item_id FROM new_labels)
            FOR KEY SHARE OF i
        ) AS locked;
        IF found <> named THEN
            SELECT n.item_id INTO missing FROM new_labels n
            WHERE NOT EXISTS (SELECT 1 FROM annotation_item i WHERE i.id = n.item_id) LIMIT 1;
            RAISE foreign_key_violation USING MESSAGE = format(
                'annotation_consensuslabel: item %s does not exist '
                '(%s of the %s items the new labels name are missing)',
                missing, named - found, named);
        END IF;
        RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER label_items_exist AFTER INSERT ON annotation_consensuslabel
    REFERENCING NEW TABLE AS new_labels
    FOR EACH STATEMENT EXECUTE FUNCTION annotation_consensuslabel_items_exist()
    """,
    """
    CREATE FUNCTION annotation_consensuslabel_item_exists() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM 1 FROM annotation_item WHERE id = NEW.item_id FOR KEY SHARE;
        IF NOT FOUND THEN
            RAISE foreign_key_violation USING MESSAGE = format(
                'annotation_consensuslabel: item %s does not exist', NEW.item_id);
        END IF;
        RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER label_item_exists AFTER UPDATE OF item_id ON annotation_consensuslabel
    FOR EACH ROW WHEN (OLD.item_id IS DISTINCT FROM NEW.item_id)
    EXECUTE FUNCTION annotation_consensuslabel_item_exists()
    """,
    """
    CREATE FUNCTION annotation_item_labels_gone() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF EXISTS (SELECT 1 FROM annotation_consensuslabel WHERE item_id = OLD.id) THEN
            RAISE foreign_key_violation USING MESSAGE = format(
                'annotation_item: item %s still has consensus labels (delete them first)', OLD.id);
        END IF;
        RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER item_labels_gone AFTER DELETE ON annotation_item
    FOR EACH ROW EXECUTE FUNCTION annotation_item_labels_gone()
    """,
    """
    CREATE TRIGGER item_id_labels_gone AFTER UPDATE OF id ON annotation_item
    FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id) EXECUTE FUNCTION annotation_item_labels_gone()
    """,
]
POSTGRESQL_REVERSE = [
    "DROP TRIGGER item_id_labels_gone ON annotation_item",
    "DROP TRIGGER item_labels_gone ON annotation_item",
    "DROP FUNCTION annotation_item_labels_gone()",
    "DROP TRIGGER label_item_exists ON annotation_consensuslabel",
    "DROP FUNCTION annotation_consensuslabel_item_exists()",
    "DROP TRIGGER label_items_exist ON annotation_consensuslabel",
    "DROP FUNCTION annotation_consensuslabel_items_exist()",
]

SQLITE = [
    """
    CREATE TRIGGER label_items_exist BEFORE INSERT ON annotation_consensuslabel
    WHEN NOT EXISTS (SELECT 1 FROM annotation_item WHERE id = NEW.item_id)
    BEGIN
        SELECT RAISE(ABORT, 'annotation_consensuslabel: FOREIGN KEY constraint failed: no such item');
    END
    """,
    """
    CREATE TRIGGER label_item_exists BEFORE UPDATE OF item_id ON annotation_consensuslabel
    WHEN NOT EXISTS (SELECT 1 FROM annotation_item WHERE id = NEW.item_id)
    BEGIN
        SELECT RAISE(ABORT, 'annotation_consensuslabel: FOREIGN KEY constraint failed: no such item');
    END
    """,
    """
    CREATE TRIGGER item_labels_gone BEFORE DELETE ON annotation_item
    WHEN EXISTS (SELECT 1 FROM annotation_consensuslabel WHERE item_id = OLD.id)
    BEGIN
        SELECT RAISE(ABORT, 'annotation_item: FOREIGN KEY constraint failed: the item has consensus labels');
    END
    """,
    """
    CREATE TRIGGER item_id_labels_gone BEFORE UPDATE OF id ON annotation_item
    WHEN OLD.id <> NEW.id AND EXISTS (SELECT 1 FROM annotation_consensuslabel WHERE item_id = OLD.id)
    BEGIN
        SELECT RAISE(ABORT, 'annotation_item: FOREIGN KEY constraint failed: the item has consensus labels');
    END
    """,
]
SQLITE_REVERSE = [
    "DROP TRIGGER item_id_labels_gone",
    "DROP TRIGGER item_labels_gone",
    "DROP TRIGGER label_item_exists",
    "DROP TRIGGER label_items_exist",
]
TRIGGERS = {"postgresql": (POSTGRESQL, POSTGRESQL_REVERSE), "sqlite": (SQLITE, SQLITE_REVERSE)}


def create_triggers(apps, schema_editor):
    for statement in TRIGGERS[schema_editor.connection.vendor][0]:
        schema_editor.execute(statement, params=None)  # None: the % of format() are not placeholders


def drop_triggers(apps, schema_editor):
    for statement in TRIGGERS[schema_editor.connection.vendor][1]:
        schema_editor.execute(statement, params=None)


class Migration(migrations.Migration):
    dependencies = [
        ("annotation", "0008_consensuslabel_item_attribute_primary_key"),
    ]

    operations = [
        migrations.AlterField(
            model_name="consensuslabel",
            name="item",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="labels",
                to="annotation.item",
            ),
        ),
        migrations.RunPython(create_triggers, drop_triggers),
    ]
