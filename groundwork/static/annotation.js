// The rating page (templates/annotation/rate.html): the question cascade and keyboard answers.
// The page works without this file: every question shows and the server applies the cascade.
// Listeners sit on the document, so items htmx swaps in need no setting up.
(function () {
  "use strict";

  var KEYS = { 1: 0, 2: 1, 3: 2 }; // key → Yes, No, Maybe

  function questions(form) {
    return Array.prototype.slice.call(form.querySelectorAll("fieldset.question"));
  }

  function answerOf(fieldset) {
    var checked = fieldset.querySelector("input[type=radio]:checked");
    return checked ? checked.value : null;
  }

  // The first visible question without an answer: the one keys 1/2/3 answer.
  function currentQuestion(form) {
    return questions(form).find(function (q) { return !q.hidden && answerOf(q) === null; }) || null;
  }

  // A question shows only when the one it depends on shows and is answered Yes (METHOD.md §2).
  // A hidden question is also disabled, so its answer is not sent.
  function applyCascade(form) {
    var shown = {};
    questions(form).forEach(function (q) {
      var needs = q.dataset.requiresYes;
      var visible = !needs || shown[needs] === "yes";
      q.hidden = !visible;
      q.disabled = !visible;
      if (visible) shown[q.dataset.attribute] = answerOf(q);
    });
    var current = currentQuestion(form);
    questions(form).forEach(function (q) {
      q.classList.toggle("current", q === current);
      if (q === current) q.setAttribute("aria-current", "step");
      else q.removeAttribute("aria-current");
    });
  }

  function applyAll() {
    document.querySelectorAll("form.answers").forEach(applyCascade);
  }

  function hint(form, text) {
    var el = form.querySelector("[data-answers-hint]");
    if (el) el.textContent = text;
  }

  function submitIfComplete(form) {
    var current = currentQuestion(form);
    if (current) {
      hint(form, "Answer “" + current.querySelector("legend").textContent + "” first.");
      current.scrollIntoView({ block: "nearest" });
      return;
    }
    hint(form, "");
    send(form);
  }

  // htmx wires a swapped-in form only when the swap settles; a key pressed before that would
  // post the form natively (a full page load), so wire it now (a no-op when already done).
  function send(form) {
    if (window.htmx) window.htmx.process(form);
    form.requestSubmit();
  }

  function typing(el) {
    return el.isContentEditable || el.matches("textarea, select, input:not([type=radio]):not([type=checkbox])");
  }

  document.addEventListener("change", function (event) {
    var form = event.target.closest && event.target.closest("form.answers");
    if (form) {
      hint(form, "");
      applyCascade(form);
    }
  });

  document.addEventListener("keydown", function (event) {
    if (event.defaultPrevented || event.repeat || event.isComposing) return;
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    var form = document.querySelector("form.answers");
    var target = event.target instanceof Element ? event.target : document.body;
    if (!form || typing(target)) return;
    if (Object.prototype.hasOwnProperty.call(KEYS, event.key)) {
      var current = currentQuestion(form);
      if (!current) return;
      var radio = current.querySelectorAll("input[type=radio]")[KEYS[event.key]];
      if (!radio) return;
      event.preventDefault();
      radio.checked = true;
      radio.dispatchEvent(new Event("change", { bubbles: true }));
    } else if (event.key === "Enter") {
      // Buttons, links and disclosure summaries keep their own Enter.
      if (target.closest("button, a, summary")) return;
      event.preventDefault();
      submitIfComplete(form);
    } else if (event.key === "s" || event.key === "S") {
      var skip = document.querySelector("form.skip");
      if (!skip) return;
      event.preventDefault();
      send(skip);
    }
  });

  // Before the swapped-in item is painted, so its later questions never flash into view.
  document.addEventListener("htmx:afterSwap", applyAll);

  // A new item swapped in: move focus to its heading, so assistive technology reads it.
  document.addEventListener("htmx:load", function (event) {
    var elt = event.detail && event.detail.elt;
    if (!elt || !elt.matches || !elt.matches(".task")) return;
    applyAll();
    var heading = elt.querySelector("#task-heading");
    if (heading) heading.focus();
  });

  document.addEventListener("htmx:beforeSwap", function (event) {
    var detail = event.detail;
    if (!detail.target || !detail.target.matches || !detail.target.matches(".task")) return;
    var xhr = detail.xhr;
    // The answer came from somewhere else (the session ended: the login page): reload the page,
    // which takes the worker to log in and back here.
    var asked = new URL(detail.pathInfo.requestPath, window.location.href).pathname;
    if (xhr.responseURL && new URL(xhr.responseURL).pathname !== asked) {
      detail.shouldSwap = false;
      window.location.reload();
      return;
    }
    if (xhr.status >= 400) showError(detail.target, "The server refused this (" + xhr.status + "). Reload the page.");
  });

  document.addEventListener("htmx:sendError", function (event) {
    var task = event.detail.elt && event.detail.elt.closest(".task");
    if (task) showError(task, "Could not reach the server; your answers were not sent. Try again.");
  });

  function showError(task, text) {
    var el = task.querySelector("[data-task-error]");
    if (el) el.textContent = text;
  }

  applyAll();
})();
