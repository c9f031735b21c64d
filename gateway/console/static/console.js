// Progressive enhancement only: every page works without this file.
(function () {
  "use strict";

  // Forms that ask before a destructive action (data-confirm="question").
  document.addEventListener("submit", function (event) {
    var question = event.target.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
    }
  });

  // The avatar menu closes with Escape (focus back on its button) and when clicking elsewhere.
  var menu = document.getElementById("avatar-menu");
  if (menu) {
    document.addEventListener("keydown", function (event) {
      if (event.key === "Escape" && menu.open) {
        menu.open = false;
        menu.querySelector("summary").focus();
      }
    });
    document.addEventListener("click", function (event) {
      if (menu.open && !menu.contains(event.target)) {
        menu.open = false;
      }
    });
  }

  // Delete: the button is enabled once the typed name equals the organization's name.
  var confirmInput = document.querySelector("[data-must-equal]");
  var deleteButton = document.getElementById("delete-button");
  if (confirmInput && deleteButton && !confirmInput.disabled) {
    var sync = function () {
      deleteButton.disabled = confirmInput.value !== confirmInput.getAttribute("data-must-equal");
    };
    confirmInput.addEventListener("input", sync);
    sync();
  }

  // Overview: embed the first page of the credit ledger (its own request: it reads the ledger
  // from the database, the rest of the overview is one quick round trip). Without the script the
  // section links to the ledger page.
  var ledger = document.getElementById("ledger-section");
  if (ledger) {
    fetch(ledger.getAttribute("data-fragment-url"), {credentials: "same-origin"})
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        var fallback = ledger.querySelector(".ledger-fallback");
        if (html && fallback) {
          var holder = document.createElement("div");
          holder.innerHTML = html;  // our own server's escaped markup
          fallback.replaceWith(holder);
        }
      })
      .catch(function () { /* the link stays */ });
  }

  // Deletion progress: poll the status until every service has purged.
  var progress = document.getElementById("deletion-progress");
  if (progress) {
    var url = progress.getAttribute("data-status-url");
    var poll = function () {
      fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
        .then(function (response) { return response.ok ? response.json() : null; })
        .then(function (status) {
          if (!status) { return; }
          Object.keys(status.services).forEach(function (name) {
            var cell = progress.querySelector('[data-service="' + name + '"]');
            if (cell) { cell.textContent = status.services[name] === "purged" ? "purged" : "pending"; }
          });
          document.getElementById("deletion-status").textContent =
            status.status === "deleted" ? "Deleted" : "Deleting…";
          if (status.status !== "deleted") {
            window.setTimeout(poll, 500);
          } else if (status.completed_at) {
            document.getElementById("deletion-completed").textContent =
              "; completed " + status.completed_at.replace("T", " ").slice(0, 16) + " UTC";
          }
        })
        .catch(function () { window.setTimeout(poll, 2000); });
    };
    if (document.getElementById("deletion-status").textContent !== "Deleted") {
      window.setTimeout(poll, 300);
    }
  }
}());
