"""Crowdworker pages, one module per page family:

- ``rating`` — the campaigns open to a worker (``/work/``) and rating the items of one campaign
  (``annotation/rate.html``; its ``task`` partial is what htmx swaps after a submit or a skip);
- ``rewrite`` — the grounded rewrite task with its research panel (``annotation/rewrite.html``);
- ``evaluation`` — an evaluation set's tasks: writing the next turn (``annotation/write.html``) and
  choosing the better of two responses (``annotation/compare.html``);
- ``chat`` — chatting with the model (``annotation/chat_start.html``, ``annotation/chat.html``);
- ``common`` — what they share: the 303 after a form post, the turns of an item's context.

Every form is a real form, so the pages work without JavaScript: the views then answer with a 303
to the page. A service's refusal is shown on the page (``groundwork.http_errors.shows_refusals``);
views do not catch errors.
"""
