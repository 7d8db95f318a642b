// controlplane web UI: confirmation of dangerous forms, and the live deployment log.
(function () {
  "use strict";

  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  });

  var root = document.getElementById("deployment");
  if (!root || root.dataset.active !== "true") return;

  var eventsUrl = root.dataset.eventsUrl;
  var detailUrl = root.dataset.detailUrl;
  var after = parseInt(root.dataset.after, 10) || 0;
  var lines = document.getElementById("log-lines");
  var log = document.getElementById("log");
  var delay = 1500;

  function getJSON(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } }).then(
      function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      }
    );
  }

  function clock(iso) {
    var d = new Date(iso);
    return isNaN(d) ? "" : d.toISOString().slice(11, 19);
  }

  function cell(row, cls, text) {
    var td = document.createElement("td");
    td.className = cls;
    td.textContent = text || "";
    row.appendChild(td);
  }

  function addLine(e) {
    if (lines.querySelector('tr[data-seq="' + e.seq + '"]')) return;
    var row = document.createElement("tr");
    row.className = "level-" + e.level;
    row.dataset.seq = e.seq;
    cell(row, "ts", clock(e.created_at));
    cell(row, "region", e.region);
    cell(row, "step", e.step);
    cell(row, "msg", e.message);
    lines.appendChild(row);
  }

  function setBadge(badge, status) {
    if (!badge) return;
    badge.textContent = status || "\u2014";
    badge.className = "badge status-" + (status || "none");
  }

  function seconds(start, end) {
    if (!start) return "";
    var s = Math.max(0, Math.round(((end ? new Date(end) : new Date()) - new Date(start)) / 1000));
    var m = Math.floor(s / 60), h = Math.floor(m / 60);
    if (h) return h + "h " + String(m % 60).padStart(2, "0") + "m";
    if (m) return m + "m " + String(s % 60).padStart(2, "0") + "s";
    return s + "s";
  }

  function setField(row, name, text) {
    var td = row.querySelector('[data-field="' + name + '"]');
    if (td && name !== "status") td.textContent = text || (name === "error" ? "" : "\u2014");
    if (td && name === "status") setBadge(td.querySelector(".badge"), text);
  }

  function refreshRegions() {
    return getJSON(detailUrl).then(function (d) {
      setBadge(document.getElementById("deployment-status"), d.status);
      d.regions.forEach(function (r) {
        var row = document.querySelector('#regions tr[data-region="' + CSS.escape(r.region) + '"]');
        if (!row) return;
        ["status", "step", "version", "previous_version", "error"].forEach(function (name) {
          setField(row, name, r[name]);
        });
        setField(row, "duration", seconds(r.started_at, r.finished_at));
      });
      if (d.finished_at) {
        document.getElementById("deployment-finished").textContent =
          d.finished_at.slice(0, 19).replace("T", " ") + " (" + seconds(d.started_at, d.finished_at) + ")";
      }
    });
  }

  function finish() {
    var live = document.getElementById("live-indicator");
    if (live) live.remove();
  }

  function poll() {
    getJSON(eventsUrl + "?after=" + after)
      .then(function (page) {
        var atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 24;
        page.results.forEach(addLine);
        if (page.results.length) {
          var empty = document.getElementById("log-empty");
          if (empty) empty.remove();
          if (atBottom) log.scrollTop = log.scrollHeight;
        }
        after = page.last_seq;
        delay = 1500;
        var refreshed = page.results.length || page.finished ? refreshRegions() : Promise.resolve();
        return refreshed.then(function () {
          if (page.finished) return finish();
          window.setTimeout(poll, page.results.length >= 500 ? 0 : delay);
        });
      })
      .catch(function () {
        delay = Math.min(delay * 2, 30000); // the server is restarting or the network is down
        window.setTimeout(poll, delay);
      });
  }

  log.scrollTop = log.scrollHeight;
  window.setTimeout(poll, delay);
})();
