// evolution-store dashboard: the only script. Pages work without it; with it, choosing a
// span in a waterfall opens its detail beside the waterfall without reloading the page.
(function () {
  "use strict";

  async function openSpan(link) {
    const panel = document.getElementById("detail");
    const list = link.closest("[data-detail]");
    if (!panel || !list) return false;
    const spanId = link.closest(".wf-row").id.replace(/^span-/, "");
    const response = await fetch(list.dataset.detail.replace("{}", spanId), { credentials: "same-origin" });
    if (!response.ok) return false;
    panel.innerHTML = await response.text();
    document.querySelectorAll(".wf-row.is-selected").forEach(function (row) {
      row.classList.remove("is-selected");
      row.querySelector(".wf-label").removeAttribute("aria-current");
    });
    const row = link.closest(".wf-row");
    row.classList.add("is-selected");
    link.setAttribute("aria-current", "true");
    // The URL names the span, so it can be shared, and a reload shows the same thing.
    history.replaceState(null, "", link.getAttribute("href"));
    panel.focus({ preventScroll: true });
    return true;
  }

  document.addEventListener("click", function (event) {
    const link = event.target.closest("[data-detail] a.wf-label");
    if (!link || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
    event.preventDefault();
    openSpan(link).then(function (done) {
      if (!done) window.location.href = link.href;
    }, function () {
      window.location.href = link.href;
    });
  });
})();
