// keycard assessment report. Draws the findings table and the data stores
// from the embedded JSON and wires the filters and the graph. Every value
// from the cluster goes into the page through textContent, never as markup.
(function () {
  "use strict";
  var dataEl = document.getElementById("keycard-data");
  var data = JSON.parse(dataEl ? dataEl.textContent : "{}");
  var findings = data.findings || [];
  var pillars = data.pillars || {};
  var SEV = { critical: 0, high: 1, medium: 2, low: 3 };
  var PAGE = 250;

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  findings.sort(function (a, b) {
    return (SEV[a.severity] - SEV[b.severity]) ||
      (a.pillar < b.pillar ? -1 : a.pillar > b.pillar ? 1 : 0) ||
      (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
  });
  findings.forEach(function (f) {
    f._text = [f.id, f.rule, f.title, f.resource, f.namespace || "", f.category,
      (f.evidence || []).join(" "), f.remediation].join("\n").toLowerCase();
  });

  var tbody = document.querySelector("#findings-table tbody");
  var count = document.getElementById("finding-count");
  var more = document.getElementById("more");
  var fSev = document.getElementById("f-severity");
  var fPil = document.getElementById("f-pillar");
  var fNs = document.getElementById("f-namespace");
  var fText = document.getElementById("f-text");
  var matches = [];
  var shown = 0;

  function row(f) {
    var tr = el("tr", "finding");
    tr.dataset.severity = f.severity;
    tr.dataset.pillar = f.pillar;
    var sev = el("td");
    sev.appendChild(el("span", "sev sev-" + f.severity, f.severity));
    tr.appendChild(sev);
    tr.appendChild(el("td", null, pillars[f.pillar] || f.pillar));
    var t = el("td");
    t.appendChild(el("div", null, f.title));
    t.appendChild(el("div", "rule", f.rule));
    tr.appendChild(t);
    var r = el("td");
    r.appendChild(el("code", null, f.resource));
    tr.appendChild(r);
    tr.appendChild(el("td", null, f.namespace || "(cluster-wide)"));
    var b = el("td");
    var btn = el("button", "toggle", "Details");
    btn.type = "button";
    btn.setAttribute("aria-expanded", "false");
    b.appendChild(btn);
    tr.appendChild(b);

    var detail = el("tr", "detail");
    detail.hidden = true;
    var td = el("td");
    td.colSpan = 6;
    td.appendChild(el("h4", null, "Evidence"));
    var ul = el("ul");
    (f.evidence || []).forEach(function (e) { ul.appendChild(el("li", null, e)); });
    td.appendChild(ul);
    td.appendChild(el("h4", null, "Remediation"));
    td.appendChild(el("p", null, f.remediation));
    var ctl = Object.keys(f.controls || {});
    if (ctl.length) {
      td.appendChild(el("h4", null, "Controls"));
      td.appendChild(el("p", null, ctl.map(function (k) {
        return k + ": " + f.controls[k].join(", ");
      }).join(" · ")));
    }
    if (f.file) {
      td.appendChild(el("p", "rule", f.file + (f.line ? ":" + f.line : "")));
    }
    td.appendChild(el("p", "rule", "id " + f.id));
    detail.appendChild(td);
    btn.addEventListener("click", function () {
      detail.hidden = !detail.hidden;
      btn.setAttribute("aria-expanded", String(!detail.hidden));
    });
    return [tr, detail];
  }

  function showMore() {
    var frag = document.createDocumentFragment();
    var end = Math.min(matches.length, shown + PAGE);
    for (var i = shown; i < end; i++) {
      var rows = row(matches[i]);
      frag.appendChild(rows[0]);
      frag.appendChild(rows[1]);
    }
    tbody.appendChild(frag);
    shown = end;
    var total = data.findingsTotal || findings.length;
    count.textContent = "Showing " + shown + " of " + matches.length + " matching findings (" + total + " in all)";
    more.hidden = shown >= matches.length;
    more.textContent = "Show " + Math.min(PAGE, matches.length - shown) + " more";
  }

  function apply() {
    var s = fSev.value, p = fPil.value, n = fNs.value;
    var q = fText.value.trim().toLowerCase();
    matches = findings.filter(function (f) {
      if (s && f.severity !== s) return false;
      if (p && f.pillar !== p) return false;
      if (n === "-" && f.namespace) return false;
      if (n && n !== "-" && f.namespace !== n) return false;
      if (q && f._text.indexOf(q) < 0) return false;
      return true;
    });
    tbody.textContent = "";
    shown = 0;
    showMore();
  }

  if (tbody) {
    [fSev, fPil, fNs].forEach(function (x) { x.addEventListener("change", apply); });
    fText.addEventListener("input", apply);
    document.getElementById("filters").addEventListener("reset", function () {
      setTimeout(apply, 0);
    });
    more.addEventListener("click", showMore);
    apply();
  }

  // A click on a chart bar filters the table by that severity or pillar.
  document.querySelectorAll(".bar-row[data-filter]").forEach(function (g) {
    function go() {
      var parts = g.getAttribute("data-filter").split(":");
      fSev.value = parts[0] === "severity" ? parts[1] : "";
      fPil.value = parts[0] === "pillar" ? parts[1] : "";
      apply();
      document.getElementById("findings").scrollIntoView({ behavior: "smooth" });
    }
    g.addEventListener("click", go);
    g.addEventListener("keydown", function (e) { if (e.key === "Enter") go(); });
  });

  // Data stores and who reaches them.
  var stores = document.querySelector("#stores-table tbody");
  if (stores) {
    (data.dataStores || []).forEach(function (d) {
      var tr = el("tr", "store");
      var w = el("td");
      w.appendChild(el("code", null, d.workload));
      tr.appendChild(w);
      tr.appendChild(el("td", null, d.engine + " (" + d.recognised_by + ")"));
      tr.appendChild(el("td", null, (d.ports || []).join(", ")));
      tr.appendChild(el("td", d.isolated ? null : "yes-bad", d.isolated ? "yes" : "no: every pod can reach it"));
      tr.appendChild(el("td", d.reachable_from_outside ? "yes-bad" : null, d.reachable_from_outside ? "yes" : "no"));
      var reach = el("td");
      var list = d.reachable_from || [];
      if (!list.length) {
        reach.textContent = "nothing in the cluster";
      } else {
        var det = el("details");
        det.appendChild(el("summary", null, list.length + " workload" + (list.length === 1 ? "" : "s")));
        var ul = el("ul");
        list.slice(0, 500).forEach(function (r) {
          var li = el("li");
          li.appendChild(el("code", null, r.workload));
          li.appendChild(document.createTextNode(" " + r.ports));
          ul.appendChild(li);
        });
        if (list.length > 500) ul.appendChild(el("li", null, "and " + (list.length - 500) + " more"));
        det.appendChild(ul);
        reach.appendChild(det);
      }
      tr.appendChild(reach);
      stores.appendChild(tr);
    });
  }

  // The graph: a click on an identity keeps its edges, roles and resources
  // in focus; a second click (or Escape) clears it.
  var graph = document.getElementById("identity-graph");
  if (graph) {
    var focused = null;
    function clear() {
      graph.classList.remove("focus");
      graph.querySelectorAll(".hl").forEach(function (x) { x.classList.remove("hl"); });
      focused = null;
    }
    function focus(i) {
      clear();
      focused = i;
      graph.classList.add("focus");
      var roles = {};
      graph.querySelectorAll('.edge[data-i="' + i + '"]').forEach(function (e) {
        e.classList.add("hl");
        roles[e.getAttribute("data-r")] = true;
      });
      graph.querySelectorAll('.node.ident[data-i="' + i + '"]').forEach(function (n) { n.classList.add("hl"); });
      Object.keys(roles).forEach(function (r) {
        graph.querySelectorAll('.node.role[data-r="' + r + '"]').forEach(function (n) { n.classList.add("hl"); });
        graph.querySelectorAll('.edge[data-r2="' + r + '"]').forEach(function (e) {
          e.classList.add("hl");
          graph.querySelectorAll('.node.res[data-x="' + e.getAttribute("data-x") + '"]').forEach(function (n) {
            n.classList.add("hl");
          });
        });
      });
    }
    graph.querySelectorAll(".node.ident").forEach(function (n) {
      function toggle() {
        var i = n.getAttribute("data-i");
        if (focused === i) clear(); else focus(i);
      }
      n.addEventListener("click", toggle);
      n.addEventListener("keydown", function (e) { if (e.key === "Enter") toggle(); });
    });
    document.addEventListener("keydown", function (e) { if (e.key === "Escape") clear(); });
  }
})();
