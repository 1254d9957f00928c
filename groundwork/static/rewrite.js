// The rewrite page (templates/annotation/rewrite.html): the questions in order and "Cite".
// Without this file every step shows and the server applies the order; a Markdown link to copy
// stands next to each result. Listeners sit on the document, so results htmx swaps in need no
// setting up.
(function () {
  "use strict";

  function answer(form, name) {
    var checked = form.querySelector("input[name=" + name + "]:checked");
    return checked ? checked.value : null;
  }

  // Claims? No → submit. Common knowledge? Yes → submit. Otherwise research and rewrite.
  // A hidden step is disabled too, so what it holds is not sent.
  function applySteps() {
    var form = document.getElementById("rewrite-form");
    if (!form) return;
    var claims = answer(form, "claims_external");
    var common = answer(form, "common_knowledge");
    var showCommon = claims === "yes";
    var showRewrite = showCommon && common === "no";
    document.querySelectorAll("[data-step=common]").forEach(function (el) {
      el.hidden = !showCommon;
      el.disabled = !showCommon;
      el.querySelectorAll("input").forEach(function (i) { i.required = showCommon; });
    });
    document.querySelectorAll("[data-step=rewrite]").forEach(function (el) {
      el.hidden = !showRewrite;
      var text = el.querySelector("textarea");
      if (text) { text.disabled = !showRewrite; text.required = showRewrite; }
    });
  }

  // Insert "[title](url)" at the cursor of the rewrite (at its end when it had no focus yet).
  function cite(button) {
    var text = document.getElementById("rewrite-text");
    if (!text) return;
    var link = "[" + button.dataset.citeTitle + "](" + button.dataset.citeUrl + ")";
    var start = text.selectionStart, end = text.selectionEnd;
    if (document.activeElement !== text && !text.dataset.cited) start = end = text.value.length;
    var before = text.value.slice(0, start);
    var spacer = before && !/\s$/.test(before) ? " " : "";
    text.value = before + spacer + link + text.value.slice(end);
    text.dataset.cited = "1";
    var caret = start + spacer.length + link.length;
    text.focus();
    text.setSelectionRange(caret, caret);
  }

  document.addEventListener("change", function (event) {
    if (event.target.closest && event.target.closest("#rewrite-form")) applySteps();
  });

  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("button.cite");
    if (!button) return;
    event.preventDefault();
    cite(button);
  });

  document.addEventListener("htmx:beforeSwap", function (event) {
    var detail = event.detail;
    if (!detail.target || detail.target.id !== "research-results") return;
    // The session ended (the answer is the login page): reload, which goes to log in and back.
    var asked = new URL(detail.pathInfo.requestPath, window.location.href).pathname;
    if (detail.xhr.responseURL && new URL(detail.xhr.responseURL).pathname !== asked) {
      detail.shouldSwap = false;
      window.location.reload();
    }
  });

  applySteps();
})();
