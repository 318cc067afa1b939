// The rule page: the explain panel follows the draft as it is edited (before saving), field errors appear
// next to the fields being edited, and "Add a step" adds route rows. Without JavaScript the Explain button
// posts the form and the page comes back with the panel filled in.
(function () {
  "use strict";
  var form = document.getElementById("rule-form");
  if (!form) {
    return;
  }
  var panel = document.getElementById("explain-result");
  var url = form.getAttribute("data-explain-url");
  var token = form.querySelector('input[name="csrf_token"]').value;
  var touched = {};
  var timer = null;
  var sent = 0;

  function fieldId(name) {
    return "f-" + name.replace(/\./g, "-");
  }

  function mark(element) {
    if (!element.name) {
      return;
    }
    touched[element.name] = true;
    touched[element.name.split(".")[0]] = true;
  }

  // Errors of fields the person has edited are shown; errors that are gone are cleared everywhere.
  function showErrors(errors) {
    var lines = form.querySelectorAll("[data-error-for]");
    for (var i = 0; i < lines.length; i++) {
      var name = lines[i].getAttribute("data-error-for");
      var message = errors[name] || "";
      if (message && !touched[name] && !touched[name.split(".")[0]]) {
        continue;
      }
      lines[i].textContent = message;
      var input = document.getElementById(fieldId(name));
      if (input) {
        if (message) {
          input.setAttribute("aria-invalid", "true");
        } else {
          input.removeAttribute("aria-invalid");
        }
      }
    }
  }

  function explainNow() {
    var mine = ++sent;
    window.clearTimeout(timer);
    panel.setAttribute("aria-busy", "true");
    window.fetch(url, {
      method: "POST",
      body: new URLSearchParams(new FormData(form)),
      credentials: "same-origin",
      headers: { "Accept": "application/json", "X-CSRF-Token": token }
    }).then(function (response) {
      if (!response.ok) {
        throw new Error("the server answered " + response.status);
      }
      return response.json();
    }).then(function (data) {
      if (mine === sent) {
        panel.innerHTML = data.html; // rendered and escaped by the server's template
        showErrors(data.errors);
      }
    }).catch(function (error) {
      if (mine === sent) {
        panel.textContent = "The plan could not be updated: " + error.message + ". Reload the page.";
      }
    }).then(function () {
      if (mine === sent) {
        panel.removeAttribute("aria-busy");
      }
    });
  }

  function soon(event) {
    mark(event.target);
    window.clearTimeout(timer);
    timer = window.setTimeout(explainNow, 250);
  }

  form.addEventListener("input", soon);
  form.addEventListener("change", soon);
  document.getElementById("explain-button").addEventListener("click", function (event) {
    event.preventDefault();
    explainNow();
  });
  // Enter in an explain field explains instead of saving the rule.
  form.querySelector("aside.explain").addEventListener("keydown", function (event) {
    if (event.key === "Enter" && event.target.tagName === "INPUT") {
      event.preventDefault();
      explainNow();
    }
  });

  var route = document.getElementById("route");
  var add = document.getElementById("add-step");
  var maxSteps = parseInt(route.getAttribute("data-max-steps"), 10);

  function steps() {
    return route.querySelectorAll(".step");
  }

  function renumber(row, from, to, position) {
    var attributes = ["name", "id", "for", "aria-describedby", "data-error-for"];
    var elements = row.querySelectorAll("*");
    for (var i = 0; i < elements.length; i++) {
      var element = elements[i];
      for (var j = 0; j < attributes.length; j++) {
        var value = element.getAttribute(attributes[j]);
        if (value) {
          element.setAttribute(attributes[j], value
            .replace("route." + from + ".", "route." + to + ".")
            .replace("route-" + from + "-", "route-" + to + "-"));
        }
      }
      if (element.tagName === "LABEL") {
        element.textContent = element.textContent.replace(/^Step \d+/, "Step " + position);
      } else if (element.tagName === "INPUT") {
        element.value = "";
      } else if (element.tagName === "SELECT") {
        element.selectedIndex = 0;
      } else if (element.classList.contains("field-error")) {
        element.textContent = "";
      }
      element.removeAttribute("aria-invalid");
    }
    row.setAttribute("data-step", String(to));
  }

  function updateAdd() {
    add.hidden = steps().length >= maxSteps;
  }

  add.addEventListener("click", function () {
    var all = steps();
    var last = all[all.length - 1];
    var from = parseInt(last.getAttribute("data-step"), 10);
    var row = last.cloneNode(true);
    renumber(row, from, from + 1, all.length + 1);
    route.insertBefore(row, add);
    updateAdd();
    row.querySelector("select").focus();
  });
  updateAdd();
})();
