// The upload form: the size limit is checked here before anything is sent (the server checks
// it again), and the button says the photo is on its way. A file of its own, so that the
// page's Content-Security-Policy allows no inline script.
(function () {
  "use strict";
  var form = document.getElementById("upload");
  if (!form) return;
  var input = form.querySelector("input[name=image]");
  var limit = Number(form.dataset.maxBytes);

  function showError(message) {
    var error = document.getElementById("error");
    if (!error) {
      error = document.createElement("p");
      error.id = "error";
      error.className = "error";
      error.setAttribute("role", "alert");
      form.insertAdjacentElement("afterend", error);
    }
    error.textContent = message;
  }

  function tooLarge() {
    var file = input.files && input.files[0];
    if (!file || !limit || file.size <= limit) return null;
    var mb = function (bytes) { return (bytes / 1048576).toFixed(1); };
    return file.name + " is " + mb(file.size) + " MB, larger than the limit of " +
      Math.round(limit / 1048576) + " MB: choose a smaller photo (nothing was sent)";
  }

  input.addEventListener("change", function () {
    var message = tooLarge();
    if (message) showError(message);
  });
  form.addEventListener("submit", function (event) {
    var message = tooLarge();
    if (message) {
      event.preventDefault();
      showError(message);
      return;
    }
    var button = document.getElementById("submit");
    button.disabled = true;
    button.textContent = "Segmenting\u2026";
  });
})();
