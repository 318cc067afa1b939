// Ask before a form marked data-confirm="question" is sent (deleting, revoking). Without JavaScript the
// form is sent at once.
(function () {
  "use strict";
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
    }
  });
})();
