"""Every write of the trainer, split by the process that runs it.

- ``requests`` — what the web process runs (the API, the admin): asking for a dataset or a
  training job (checked, stored, queued after commit), cancelling a job, choosing the serving
  model, finding a dataset's files; and ``TrainerError``, the refusal they share. It imports no
  training library (torch, transformers, pyarrow), so a web worker starts small and fast
  (``tests/groundwork/test_web_imports.py``).
- ``dataset_builds`` — what a Celery worker runs to build a dataset: claim it, stream its
  examples into JSONL and Parquet with a manifest, fail it with the cause, take over builds whose
  worker died.
- ``training_jobs`` — what a Celery worker (queue ``training``) runs to train: claim the job,
  train and evaluate, resume from a checkpoint, recover jobs whose worker died; and
  ``first_model_ensure``, which ``make run`` runs in the foreground.
- ``workers`` — which worker process holds a build or a job, and whether it still lives.

The worker modules import the training libraries at the top; ``trainer.tasks`` imports them, and
the web side queues their tasks by name (``groundwork.queueing.enqueue``), so no module here
imports ``trainer.tasks``.
"""
