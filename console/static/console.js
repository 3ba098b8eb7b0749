// planrun console: live parts of a page follow a Server-Sent Events stream of rendered
// fragments (the server sends only those that changed); the page works without it, as of load.
"use strict";
document.querySelectorAll("[data-stream]").forEach(function (root) {
  var es = new EventSource(root.getAttribute("data-stream"));
  es.addEventListener("fragments", function (ev) {
    var parts = JSON.parse(ev.data);
    Object.keys(parts).forEach(function (id) {
      var el = document.getElementById(id);
      if (!el) return;
      // Keep what the operator opened and where the keyboard is across the update.
      var open = {};
      el.querySelectorAll("details[id]").forEach(function (d) { open[d.id] = d.open; });
      var focused = document.activeElement && el.contains(document.activeElement) ? document.activeElement.id : "";
      el.innerHTML = parts[id];
      Object.keys(open).forEach(function (did) {
        var d = document.getElementById(did);
        if (d) d.open = open[did];
      });
      if (focused) {
        var f = document.getElementById(focused);
        if (f) f.focus();
      }
    });
  });
});
