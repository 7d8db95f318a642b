// controlplane web UI: confirmations, relative times, the live deployment page and its log filters.
(function () {
  "use strict";

  var LABELS = {
    queued: "Queued", running: "Running", succeeded: "Succeeded", failed: "Failed",
    partially_failed: "Partly failed", rolled_back: "Rolled back", cancelled: "Cancelled",
    superseded: "Superseded", skipped: "Skipped", up: "Up", down: "Down", unknown: "Unknown"
  };
  var LEVELS = ["debug", "info", "warning", "error"];

  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  });

  // --- Times: "3 min ago", the absolute UTC time on hover ------------------------------------
  function ago(date) {
    var s = (Date.now() - date.getTime()) / 1000, future = s < 0, amount;
    s = Math.abs(s);
    if (s < 45) return future ? "in a moment" : "just now";
    if (s < 3600) amount = Math.round(s / 60) + " min";
    else if (s < 86400) amount = Math.round(s / 3600) + " h";
    else if (s < 86400 * 60) { var d = Math.round(s / 86400); amount = d + (d === 1 ? " day" : " days"); }
    else return date.toISOString().slice(0, 10);
    return future ? "in " + amount : amount + " ago";
  }
  function utc(date) { return date.toISOString().slice(0, 19).replace("T", " ") + " UTC"; }
  function timeHTML(iso) {
    var el = document.createElement("time");
    if (!iso) { el = document.createElement("span"); el.className = "muted"; el.textContent = "\u2014"; return el; }
    var d = new Date(iso);
    el.className = "rel"; el.dateTime = iso; el.title = utc(d); el.textContent = ago(d);
    return el;
  }
  function refreshTimes() {
    document.querySelectorAll("time.rel[datetime]").forEach(function (el) {
      var d = new Date(el.getAttribute("datetime"));
      if (!isNaN(d)) el.textContent = ago(d);
    });
  }
  window.setInterval(refreshTimes, 30000);

  // --- The deployment page ---------------------------------------------------------------------
  var root = document.getElementById("deployment");
  if (!root) return;
  var lines = document.getElementById("log-lines");
  var log = document.getElementById("log");
  var regionFilter = document.getElementById("log-region");
  var levelFilter = document.getElementById("log-level");

  function visible(row) {
    var region = regionFilter ? regionFilter.value : "";
    var level = levelFilter ? levelFilter.value : "";
    if (region && row.dataset.region !== region) return false;
    if (level && LEVELS.indexOf(row.dataset.level) < LEVELS.indexOf(level)) return false;
    return true;
  }
  function applyFilters() {
    lines.querySelectorAll("tr").forEach(function (row) {
      row.classList.toggle("hidden-by-filter", !visible(row));
    });
  }
  [regionFilter, levelFilter].forEach(function (el) { if (el) el.addEventListener("change", applyFilters); });
  // The filters apply as they change; the form is never sent (Enter in it would reload the page).
  var filterForm = document.getElementById("log-filters");
  if (filterForm) filterForm.addEventListener("submit", function (event) { event.preventDefault(); });

  function seconds(start, end) {
    if (!start) return "";
    var s = Math.max(0, Math.round(((end ? new Date(end) : new Date()) - new Date(start)) / 1000));
    var m = Math.floor(s / 60), h = Math.floor(m / 60);
    if (h) return h + "h " + String(m % 60).padStart(2, "0") + "m";
    if (m) return m + "m " + String(s % 60).padStart(2, "0") + "s";
    return s + "s";
  }
  function tickDurations() {
    document.querySelectorAll('#regions td[data-field="duration"]').forEach(function (td) {
      if (td.dataset.start && !td.dataset.end) td.textContent = seconds(td.dataset.start, null);
    });
  }

  if (root.dataset.active !== "true") return;

  var eventsUrl = root.dataset.eventsUrl;
  var detailUrl = root.dataset.detailUrl;
  var after = parseInt(root.dataset.after, 10) || 0;
  var delay = 1500;

  function getJSON(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } }).then(
      function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      }
    );
  }
  function cell(row, cls, child) {
    var td = document.createElement("td");
    td.className = cls;
    if (typeof child === "string") td.textContent = child; else if (child) td.appendChild(child);
    row.appendChild(td);
  }
  function addLine(e) {
    if (lines.querySelector('tr[data-seq="' + e.seq + '"]')) return;
    var row = document.createElement("tr");
    var region = e.region || "";
    var message = region && e.message.indexOf(region + ": ") === 0 ? e.message.slice(region.length + 2) : e.message;
    row.className = "level-" + e.level;
    row.dataset.seq = e.seq;
    row.dataset.region = region || "-";
    row.dataset.level = e.level;
    var t = document.createElement("time");
    var d = new Date(e.created_at);
    t.dateTime = e.created_at; t.title = utc(d); t.textContent = d.toISOString().slice(11, 19);
    cell(row, "ts", t);
    cell(row, "region", region);
    cell(row, "step", e.step || "");
    cell(row, "msg", message);
    row.classList.toggle("hidden-by-filter", !visible(row));
    // Keep the log in sequence order whatever order the lines arrive in.
    var next = null;
    var rows = lines.children;
    for (var i = rows.length - 1; i >= 0; i--) {
      if (parseInt(rows[i].dataset.seq, 10) < e.seq) break;
      next = rows[i];
    }
    lines.insertBefore(row, next);
  }
  function setBadge(badge, status) {
    if (!badge) return;
    badge.textContent = LABELS[status] || status || "\u2014";
    badge.className = "badge status-" + (status || "none");
    badge.dataset.status = status || "";
  }
  function setTime(el, iso) {
    if (!el) return;
    el.textContent = "";
    el.appendChild(timeHTML(iso));
  }
  function setField(row, name, value) {
    var td = row.querySelector('[data-field="' + name + '"]');
    if (!td) return;
    if (name === "status") setBadge(td.querySelector(".badge"), value);
    else if (name === "started_at") setTime(td, value);
    else td.textContent = value || (name === "error" ? "" : "\u2014");
  }
  function failureSummary(regions) {
    var failed = regions.filter(function (r) { return r.status === "failed" || r.status === "rolled_back"; });
    var box = document.getElementById("failure-summary");
    if (!box) return;
    box.hidden = !failed.length;
    document.getElementById("failure-title").textContent =
      failed.length + " region" + (failed.length === 1 ? "" : "s") + " failed:";
    var list = document.getElementById("failure-list");
    list.textContent = "";
    failed.forEach(function (r) {
      var li = document.createElement("li");
      var strong = document.createElement("strong");
      strong.textContent = r.region;
      li.dataset.region = r.region;
      li.appendChild(strong);
      li.appendChild(document.createTextNode(" (" + (LABELS[r.status] || r.status).toLowerCase() + "): " + (r.error || "No error was recorded.")));
      list.appendChild(li);
    });
  }
  function refreshDetail() {
    return getJSON(detailUrl).then(function (d) {
      setBadge(document.getElementById("deployment-status"), d.status);
      setTime(document.getElementById("deployment-started"), d.started_at);
      setTime(document.getElementById("deployment-finished"), d.finished_at);
      document.getElementById("deployment-duration").textContent = seconds(d.started_at, d.finished_at) || "\u2014";
      d.regions.forEach(function (r) {
        var row = document.querySelector('#regions tr[data-region="' + CSS.escape(r.region) + '"]');
        if (!row) return;
        ["status", "step", "version", "previous_version", "started_at", "error"].forEach(function (name) {
          setField(row, name, r[name]);
        });
        var td = row.querySelector('[data-field="duration"]');
        if (td) {
          td.dataset.start = r.started_at || "";
          td.dataset.end = r.finished_at || "";
          td.textContent = seconds(r.started_at, r.finished_at) || "\u2014";
        }
      });
      failureSummary(d.regions);
      return d;
    });
  }
  function finish() {
    var live = document.getElementById("live-indicator");
    if (live) live.remove();
    var cancel = document.getElementById("cancel-form");
    if (cancel) cancel.remove();
    root.dataset.active = "false";
    root.dataset.finished = "true";
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
        after = Math.max(after, page.last_seq);
        delay = 1500;
        return refreshDetail().then(function () {
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
  window.setInterval(tickDurations, 1000);
  window.setTimeout(poll, 500);
})();
