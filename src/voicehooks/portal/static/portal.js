// voicehooks portal: a few behaviours on top of server-rendered pages (no library, no build).
// Times in the browser's zone, copy buttons, local times in forms, live delivery attempts.
"use strict";

(function () {
  const dateTime = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "numeric",
    hour: "2-digit", minute: "2-digit", second: "2-digit",
  });
  const hourOnly = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });

  // <time datetime="…Z" title="… UTC"> shows the browser's zone; UTC stays on hover.
  function localizeTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (element) {
      const when = new Date(element.getAttribute("datetime"));
      if (!isNaN(when)) element.textContent = dateTime.format(when);
    });
    root.querySelectorAll("text[data-hour]").forEach(function (element) {
      const when = new Date(element.getAttribute("data-hour"));
      if (!isNaN(when)) element.textContent = hourOnly.format(when);
    });
  }

  function bindCopyButtons(root) {
    root.querySelectorAll("button[data-copy]").forEach(function (button) {
      button.addEventListener("click", function () {
        const source = document.getElementById(button.getAttribute("data-copy"));
        if (!source) return;
        const text = source.textContent;
        const done = function () {
          const label = button.textContent;
          button.textContent = "Copied";
          setTimeout(function () { button.textContent = label; }, 1500);
        };
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(text).then(done, function () { selectText(source); });
        } else {
          selectText(source);
        }
      });
    });
  }

  function selectText(element) {
    const range = document.createRange();
    range.selectNodeContents(element);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  // datetime-local inputs are the browser's time: send its UTC offset (minutes) along.
  function bindLocalTimeForms(root) {
    root.querySelectorAll("form[data-local-times]").forEach(function (form) {
      form.addEventListener("submit", function () {
        form.querySelectorAll("input[type=datetime-local]").forEach(function (input) {
          const offset = form.querySelector("input[name='" + input.name + "_offset']");
          if (!offset) return;
          offset.value = input.value ? String(new Date(input.value).getTimezoneOffset()) : "";
        });
      });
    });
  }

  // The event chosen in a subscription form marks the statuses it does not report.
  function bindStatusFilter(root) {
    const select = root.querySelector("select[data-status-filter]");
    if (!select) return;
    const update = function () {
      root.querySelectorAll("label.check[data-events]").forEach(function (label) {
        const events = label.getAttribute("data-events").split(" ");
        label.classList.toggle("unavailable", events.indexOf(select.value) < 0);
      });
    };
    select.addEventListener("change", update);
    update();
  }

  // An element with data-refresh is replaced by a fresh copy every 1.5 s, while it has one.
  function refreshLive() {
    const live = document.querySelector("[data-refresh]");
    if (!live) return;
    setTimeout(function () {
      fetch(live.getAttribute("data-refresh"), { credentials: "same-origin" })
        .then(function (response) { return response.ok ? response.text() : null; })
        .then(function (html) {
          if (html === null) return;
          const holder = document.createElement("div");
          holder.innerHTML = html;
          const fresh = holder.firstElementChild;
          if (!fresh) return;
          localizeTimes(fresh);
          live.replaceWith(fresh);
          if (!fresh.hasAttribute("data-refresh")) {
            const retry = document.getElementById("retry");
            if (retry) { retry.disabled = false; retry.removeAttribute("title"); }
          }
        })
        .catch(function () {})
        .then(refreshLive);
    }, 1500);
  }

  document.addEventListener("DOMContentLoaded", function () {
    localizeTimes(document);
    bindCopyButtons(document);
    bindLocalTimeForms(document);
    bindStatusFilter(document);
    refreshLive();
  });
})();
