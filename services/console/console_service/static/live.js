// Live updates (server-sent events from /live). A part of a page marked
// data-live-events="name ..." is reloaded, through the page's own address,
// when one of those events arrives; data-live-request (or data-live-delivery)
// limits it to events about one request (or one webhook delivery). The page is never reloaded as a whole, so nothing typed
// elsewhere on it is lost.
(function () {
  "use strict";
  var region = document.getElementById("live-region");
  if (!region || !window.EventSource) { return; }
  var names = (region.getAttribute("data-live-events") || "").split(/\s+/).filter(Boolean);
  var onlyRequest = region.getAttribute("data-live-request");
  var onlyDelivery = region.getAttribute("data-live-delivery");
  var pending = null;
  var source = new EventSource("/live");
  // A marker for whoever needs to know the stream is open (tests wait on it).
  source.addEventListener("open", function () { document.documentElement.setAttribute("data-live", "connected"); });
  source.addEventListener("error", function () { document.documentElement.setAttribute("data-live", "reconnecting"); });

  function refresh() {
    pending = null;
    fetch(window.location.href, {credentials: "same-origin", headers: {"Accept": "text/html"}})
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (html === null) { return; }
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("live-region");
        var current = document.getElementById("live-region");
        if (!fresh || !current) { return; }
        var focused = document.activeElement && current.contains(document.activeElement);
        current.innerHTML = fresh.innerHTML;
        current.setAttribute("data-live-version", String(Number(current.getAttribute("data-live-version") || 0) + 1));
        var note = document.getElementById("live-note");
        if (note) { note.textContent = note.getAttribute("data-updated-text") || ""; }
        if (focused) { current.focus(); }
      })
      .catch(function () { /* the next event tries again */ });
  }

  names.forEach(function (name) {
    source.addEventListener(name, function (message) {
      if (onlyRequest || onlyDelivery) {
        var data = {};
        try { data = JSON.parse(message.data); } catch (ignored) { return; }
        if (onlyRequest && data.request_id !== onlyRequest) { return; }
        if (onlyDelivery && data.delivery_id !== onlyDelivery) { return; }
      }
      // A burst of events makes one reload.
      if (pending === null) { pending = window.setTimeout(refresh, 150); }
    });
  });
  window.addEventListener("pagehide", function () { source.close(); });
})();
