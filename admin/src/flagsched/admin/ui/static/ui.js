// The admin UI's only script besides htmx (the CSP allows no inline script).
// A form or button with data-confirm asks before it submits.
document.addEventListener("submit", function (event) {
  var form = event.target;
  var button = event.submitter;
  var message = (button && button.getAttribute("data-confirm")) || form.getAttribute("data-confirm");
  if (message && !window.confirm(message)) {
    event.preventDefault();
  }
}, true);
// The meta refresh after an OIDC login also works without script; this only speeds it up.
var next = document.querySelector("a[data-continue]");
if (next) {
  window.location.assign(next.getAttribute("href"));
}
