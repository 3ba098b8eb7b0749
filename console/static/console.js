// planrun console: live parts of a page follow a Server-Sent Events stream of rendered
// fragments (the server sends only those that changed); every page works without it, as of
// its load. Durations of what is going on count up here, from the server's clock, so that the
// streamed parts change only when the run does.
"use strict";
(function () {
  var meta = document.querySelector('meta[name="planrun-now"]');
  var skew = meta ? Date.parse(meta.content) - Date.now() : 0;

  function duration(ms) {
    var s = Math.max(0, Math.floor(ms / 1000));
    if (s < 60) return s + "s";
    var m = Math.floor(s / 60);
    if (m < 60) return m + "m" + String(s % 60).padStart(2, "0") + "s";
    return Math.floor(m / 60) + "h" + String(m % 60).padStart(2, "0") + "m";
  }
  function tick() {
    var now = Date.now() + skew;
    document.querySelectorAll(".since[data-since]").forEach(function (el) {
      el.textContent = duration(now - Date.parse(el.getAttribute("data-since")));
    });
  }
  tick();
  setInterval(tick, 1000);

  function notice(text) {
    var el = document.getElementById("stream-error");
    if (el) el.textContent = text;
  }

  document.querySelectorAll("[data-stream]").forEach(function (root) {
    var url = root.getAttribute("data-stream");
    var es = null;
    function open() {
      if (es) return;
      es = new EventSource(url);
      es.addEventListener("fragments", function (ev) {
        var parts = JSON.parse(ev.data);
        var status = document.getElementById("run-status");
        var before = status ? status.textContent : "";
        Object.keys(parts).forEach(function (id) {
          var el = document.getElementById(id);
          if (!el) return;
          // Keep what the operator opened, and where the keyboard is, across the update.
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
        tick();
        status = document.getElementById("run-status");
        var live = document.getElementById("live-status");
        if (status && live && status.textContent !== before) live.textContent = "Run status: " + status.textContent.trim();
      });
      es.onopen = function () { notice(""); };
      es.onerror = function () {
        if (es && es.readyState === EventSource.CLOSED) {
          notice("Live updates stopped (the console is gone, or the token changed): reload the page.");
          es = null;
        } else {
          notice("Live updates interrupted; reconnecting…");
        }
      };
    }
    function close() {
      if (es) { es.close(); es = null; }
    }
    // A tab out of sight gives its connection back: browsers allow few per host.
    document.addEventListener("visibilitychange", function () {
      if (document.hidden) close(); else open();
    });
    window.addEventListener("pagehide", close);
    if (!document.hidden) open();
  });
})();
