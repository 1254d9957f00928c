"""Every write of the annotation engine, by concern; views, API views, admin actions, commands and
Celery tasks call these and hold no rule of their own.

- ``campaigns`` — creating a campaign from filtered dialogs, adding dialogs' model turns as items.
- ``assignments`` — the rating hot path's services: leasing the next item, submitting judgments
  (the SSI cascade, gold and qualification items), skipping, expiring leases, lifting a block.
  Its SQL is in ``annotation.hot_path``.
- ``rewrites`` — the grounded rewrite task: research in the assignment's session, the rewrite
  and its citations, who may query that session.
- ``consensus`` — labels from judgments by ``annotation.rules``: one item, a whole campaign
  (queued with progress, or at once).
- ``chats`` — crowdworkers' chats with the serving model: start, messages, the model's answer,
  flags, finish (the model turns go to the routed campaign).
- ``judgment_imports`` — judgments made elsewhere, imported all or nothing.
- ``evaluations`` — an evaluation set's campaigns: its responses rated blind, the human baseline,
  side-by-side comparisons; ``evaluation_tasks`` — a worker's written response or side-by-side choice.

Errors are in ``annotation.errors``. Work for a Celery worker is queued by task name
(``groundwork.queueing.enqueue("annotation.tasks.item_aggregate_task", …)``): no module here
imports ``annotation.tasks``, which imports them.
"""
