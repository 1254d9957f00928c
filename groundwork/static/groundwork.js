// Behaviour every page may use, declared with data attributes: the Content-Security-Policy runs
// no inline script and no inline event handler (onchange=...), so they live here.
(function () {
  "use strict";

  // <select data-submit-on-change>: choosing an option submits its form (the filter of /dialogs/).
  // Without JavaScript the form's own button does it.
  document.addEventListener("change", function (event) {
    var target = event.target;
    if (target.matches && target.matches("select[data-submit-on-change]") && target.form) {
      target.form.requestSubmit();
    }
  });
})();
