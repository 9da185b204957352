// pipacs viewer: a study browser and an image viewer on pipacs' REST routes (no libraries).
// Images are rendered by the server (/instances/{id}/rendered with the window and size), so
// the tablet only draws them: one finger uses the chosen tool, two fingers zoom and pan.
"use strict";
(function () {
  var $ = function (s) { return document.querySelector(s); };
  var ROOT = new URL("../", location.href).pathname;
  var MAX_CACHE = 80;
  var canvas = $("#canvas"), stage = $("#stage"), overlay = $("#overlay"), slider = $("#slider");
  var S = {
    studies: [], study: null, series: [], seriesId: null, instances: [], index: 0,
    img: null, tool: "scroll", zoom: 1, panX: 0, panY: 0, win: null, defaultWin: null,
    cols: 0, rows: 0, colour: false, drawn: 0, cache: new Map(), pending: null
  };

  function api(path) {
    return fetch(ROOT + path, { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (r) {
        if (!r.ok) throw new Error(r.status + " on " + path);
        return r.json();
      });
  }
  function status(text) { $("#status").textContent = text || ""; }
  function fail(e) { status("Error: " + (e && e.message ? e.message : e)); }
  function tag(obj, key) { return (obj && obj[key]) || ""; }
  function person(name) { return String(name || "").replace(/\^+/g, " ").trim() || "(no name)"; }
  function date(d) { return /^\d{8}$/.test(d) ? d.slice(0, 4) + "-" + d.slice(4, 6) + "-" + d.slice(6) : d; }
  function first(v) { return parseFloat(String(v === undefined ? "" : v).split("\\")[0]); }
  function el(name, cls, text) {
    var e = document.createElement(name);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // ------------------------------------------------------------------ study browser

  function loadStudies() {
    status("");
    return api("studies?expand").then(function (list) {
      list.sort(function (a, b) {
        return tag(b.MainDicomTags, "StudyDate").localeCompare(tag(a.MainDicomTags, "StudyDate"));
      });
      S.studies = list;
      showStudies();
    }).catch(fail);
  }

  function showStudies() {
    var words = $("#search").value.toLowerCase().split(/\s+/).filter(Boolean);
    var ul = $("#studies");
    ul.textContent = "";
    S.studies.forEach(function (st) {
      var p = st.PatientMainDicomTags || {}, m = st.MainDicomTags || {};
      var text = [person(p.PatientName), p.PatientID, m.StudyDescription, m.StudyDate,
        m.AccessionNumber].join(" ").toLowerCase();
      if (!words.every(function (w) { return text.indexOf(w) >= 0; })) return;
      var li = el("li", "study");
      li.appendChild(el("b", "", person(p.PatientName)));
      li.appendChild(el("span", "", (p.PatientID || "") + "  " + date(m.StudyDate || "")));
      li.appendChild(el("span", "", (m.StudyDescription || "(no description)") + " — " +
        (st.Series || []).length + " series"));
      li.addEventListener("click", function () { location.hash = "study=" + st.ID; });
      ul.appendChild(li);
    });
    if (!ul.firstChild) ul.appendChild(el("li", "", S.studies.length ? "No match" : "No study yet"));
  }

  // ------------------------------------------------------------------ one study

  function openStudy(id, seriesId) {
    $("#browser").hidden = true; $("#viewer").hidden = false; $("#back").hidden = false;
    $("#search").hidden = true;
    if (S.study && S.study.ID === id) { if (seriesId) openSeries(seriesId); return; }
    S.study = { ID: id }; S.series = []; S.img = null; $("#series").textContent = "";
    Promise.all([api("studies/" + id), api("studies/" + id + "/series?expand")])
      .then(function (r) {
        S.study = r[0];
        S.series = r[1].sort(function (a, b) {
          return (first(tag(a.MainDicomTags, "SeriesNumber")) || 0) - (first(tag(b.MainDicomTags, "SeriesNumber")) || 0);
        });
        var nav = $("#series");
        S.series.forEach(function (se) {
          var f = el("figure"), img = el("img"), ids = se.Instances || [];
          f.dataset.id = se.ID;
          img.alt = "";
          img.loading = "lazy";
          if (ids.length) img.src = ROOT + "instances/" + ids[Math.floor(ids.length / 2)] + "/rendered?width=92&height=92";
          f.appendChild(img);
          f.appendChild(el("figcaption", "", (tag(se.MainDicomTags, "Modality") + " " +
            (tag(se.MainDicomTags, "SeriesDescription") || tag(se.MainDicomTags, "SeriesNumber"))).trim()));
          f.addEventListener("click", function () { openSeries(se.ID); });
          nav.appendChild(f);
        });
        if (S.series.length) openSeries(seriesId || S.series[0].ID);
        else status("This study has no series");
      }).catch(fail);
  }

  function openSeries(id) {
    S.seriesId = id;
    Array.prototype.forEach.call(document.querySelectorAll("#series figure"), function (f) {
      f.classList.toggle("on", f.dataset.id === id);
    });
    api("series/" + id + "/instances").then(function (list) {
      if (S.seriesId !== id) return;
      list.sort(function (a, b) {
        var x = first(tag(a.MainDicomTags, "InstanceNumber")), y = first(tag(b.MainDicomTags, "InstanceNumber"));
        if (isNaN(x) || isNaN(y) || x === y) return (a.IndexInSeries || 0) - (b.IndexInSeries || 0);
        return x - y;
      });
      S.instances = list.map(function (i) { return i.ID; });
      slider.max = String(Math.max(0, S.instances.length - 1));
      S.cache.clear();
      resetView();
      var middle = Math.floor(S.instances.length / 2);
      if (!S.instances.length) return status("This series has no image");
      return api("instances/" + S.instances[middle] + "/simplified-tags").then(function (t) {
        if (S.seriesId !== id) return;
        S.cols = parseInt(t.Columns, 10) || 0; S.rows = parseInt(t.Rows, 10) || 0;
        S.colour = /RGB|YBR|PALETTE/.test(t.PhotometricInterpretation || "");
        var c = first(t.WindowCenter), w = first(t.WindowWidth);
        if (isNaN(c) || isNaN(w) || w <= 0) {
          var slope = first(t.RescaleSlope) || 1, icpt = first(t.RescaleIntercept) || 0;
          var bits = parseInt(t.BitsStored, 10) || 8;
          c = icpt + slope * Math.pow(2, bits - 1); w = slope * Math.pow(2, bits);
        }
        S.defaultWin = { c: c, w: w }; S.win = null;
        show(middle);
      });
    }).catch(fail);
  }

  // ------------------------------------------------------------------ images

  function imageUrl(i) {
    var q = [], dpr = Math.min(window.devicePixelRatio || 1, 2);
    var want = Math.round(Math.max(stage.clientWidth, stage.clientHeight) * dpr);
    if (S.cols && S.rows && Math.max(S.cols, S.rows) > want) {
      q.push("width=" + want, "height=" + want);
    }
    if (S.win) q.push("window-center=" + S.win.c.toFixed(1), "window-width=" + S.win.w.toFixed(1));
    q.push("quality=90");
    return ROOT + "instances/" + S.instances[i] + "/rendered?" + q.join("&");
  }

  function load(url) {
    var hit = S.cache.get(url);
    if (hit) return hit;
    var p = fetch(url, { headers: { Accept: "image/jpeg" }, credentials: "same-origin" })
      .then(function (r) {
        if (!r.ok) throw new Error(r.status + " rendering an image");
        return r.blob();
      }).then(function (blob) {
        return new Promise(function (ok, ko) {
          var img = new Image(), src = URL.createObjectURL(blob);
          img.onload = function () { URL.revokeObjectURL(src); ok(img); };
          img.onerror = function () { URL.revokeObjectURL(src); ko(new Error("undecodable image")); };
          img.src = src;
        });
      });
    p.catch(function () { S.cache.delete(url); });
    S.cache.set(url, p);
    if (S.cache.size > MAX_CACHE) S.cache.delete(S.cache.keys().next().value);
    return p;
  }

  function show(i) {
    if (!S.instances.length) return;
    i = Math.max(0, Math.min(S.instances.length - 1, i));
    S.index = i; slider.value = String(i);
    var url = imageUrl(i), series = S.seriesId;
    S.pending = url;
    load(url).then(function (img) {
      if (S.seriesId !== series || S.pending !== url) return;
      S.img = img; draw(); status("");
      prefetch(i);
    }).catch(fail);
    drawOverlay();
  }

  function prefetch(i) {
    [1, -1, 2, -2, 3, -3].forEach(function (d, k) {
      var j = i + d;
      if (j >= 0 && j < S.instances.length) setTimeout(function () { load(imageUrl(j)); }, 40 * k);
    });
  }

  function draw() {
    var dpr = Math.min(window.devicePixelRatio || 1, 2);
    var w = Math.round(stage.clientWidth * dpr), h = Math.round(stage.clientHeight * dpr);
    if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
    var ctx = canvas.getContext("2d");
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#000"; ctx.fillRect(0, 0, w, h);
    var img = S.img;
    if (!img) return;
    var fit = Math.min(w / img.naturalWidth, h / img.naturalHeight) * S.zoom;
    var iw = img.naturalWidth * fit, ih = img.naturalHeight * fit;
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(img, (w - iw) / 2 + S.panX * dpr, (h - ih) / 2 + S.panY * dpr, iw, ih);
    S.drawn += 1;
    document.body.setAttribute("data-drawn", String(S.drawn));
    drawOverlay();
  }

  function drawOverlay() {
    var p = (S.study && S.study.PatientMainDicomTags) || {}, m = (S.study && S.study.MainDicomTags) || {};
    var se = S.series.filter(function (s) { return s.ID === S.seriesId; })[0];
    var win = S.win || S.defaultWin;
    overlay.textContent = [
      person(p.PatientName) + "  " + (p.PatientID || ""),
      date(m.StudyDate || "") + "  " + (m.StudyDescription || ""),
      se ? (tag(se.MainDicomTags, "Modality") + " " + tag(se.MainDicomTags, "SeriesDescription")) : "",
      S.instances.length ? "Image " + (S.index + 1) + " / " + S.instances.length : "",
      win && !S.colour ? "W " + Math.round(win.w) + "  L " + Math.round(win.c) : "",
      S.zoom !== 1 ? "Zoom " + S.zoom.toFixed(2) + "x" : ""
    ].filter(Boolean).join("\n");
  }

  function resetView() { S.zoom = 1; S.panX = 0; S.panY = 0; }

  // Window changes are rendered by the server: one request at a time, the latest wins.
  var windowBusy = false;
  function applyWindow() {
    if (windowBusy) return;
    windowBusy = true;
    S.cache.clear();
    var url = imageUrl(S.index);
    S.pending = url;
    load(url).then(function (img) {
      if (S.pending === url) { S.img = img; draw(); }
    }).catch(fail).then(function () {
      windowBusy = false;
      if (S.pending !== imageUrl(S.index)) applyWindow();
    });
  }

  // ------------------------------------------------------------------ gestures

  var pointers = new Map(), scrollRest = 0, pinch = null;

  function act(dx, dy) {
    if (S.tool === "scroll") {
      var step = Math.max(4, Math.min(20, stage.clientHeight / Math.max(1, S.instances.length)));
      scrollRest += dy;
      var n = Math.trunc(scrollRest / step);
      if (n) { scrollRest -= n * step; show(S.index + n); }
    } else if (S.tool === "window" && !S.colour && S.defaultWin) {
      var win = S.win || { c: S.defaultWin.c, w: S.defaultWin.w };
      var k = Math.max(win.w, 16) / 256;
      S.win = { c: win.c - dy * k, w: Math.max(1, win.w + dx * k) };
      drawOverlay();
      applyWindow();
    } else if (S.tool === "pan") {
      S.panX += dx; S.panY += dy; draw();
    } else if (S.tool === "zoom") {
      S.zoom = Math.max(0.25, Math.min(16, S.zoom * Math.exp(-dy / 200))); draw();
    }
  }

  function twoFingers() {
    var p = Array.from(pointers.values());
    return { d: Math.hypot(p[0].x - p[1].x, p[0].y - p[1].y) || 1,
      x: (p[0].x + p[1].x) / 2, y: (p[0].y + p[1].y) / 2 };
  }

  stage.addEventListener("pointerdown", function (e) {
    stage.setPointerCapture(e.pointerId);
    pointers.set(e.pointerId, { x: e.clientX, y: e.clientY });
    pinch = pointers.size === 2 ? twoFingers() : null;
    e.preventDefault();
  });
  stage.addEventListener("pointermove", function (e) {
    var last = pointers.get(e.pointerId);
    if (!last) return;
    var dx = e.clientX - last.x, dy = e.clientY - last.y;
    last.x = e.clientX; last.y = e.clientY;
    if (pointers.size === 2 && pinch) {
      var now = twoFingers();
      S.zoom = Math.max(0.25, Math.min(16, S.zoom * now.d / pinch.d));
      S.panX += now.x - pinch.x; S.panY += now.y - pinch.y;
      pinch = now; draw();
    } else if (pointers.size === 1) {
      act(dx, dy);
    }
    e.preventDefault();
  });
  function up(e) {
    pointers.delete(e.pointerId);
    pinch = pointers.size === 2 ? twoFingers() : null;
  }
  stage.addEventListener("pointerup", up);
  stage.addEventListener("pointercancel", up);
  stage.addEventListener("wheel", function (e) {
    e.preventDefault();
    if (e.ctrlKey) { S.zoom = Math.max(0.25, Math.min(16, S.zoom * Math.exp(-e.deltaY / 100))); draw(); }
    else show(S.index + (e.deltaY > 0 ? 1 : -1));
  }, { passive: false });
  stage.addEventListener("dblclick", function () { resetView(); draw(); });
  // iOS Safari: no page zoom from gestures on the image.
  ["gesturestart", "gesturechange"].forEach(function (t) {
    document.addEventListener(t, function (e) { e.preventDefault(); });
  });

  slider.addEventListener("input", function () { show(parseInt(slider.value, 10)); });
  Array.prototype.forEach.call(document.querySelectorAll("#tools [data-tool]"), function (b) {
    b.addEventListener("click", function () {
      S.tool = b.dataset.tool;
      Array.prototype.forEach.call(document.querySelectorAll("#tools [data-tool]"), function (o) {
        o.classList.toggle("on", o === b);
      });
    });
  });
  $("#reset").addEventListener("click", function () {
    resetView();
    if (S.win) { S.win = null; applyWindow(); } else draw();
  });
  $("#back").addEventListener("click", function () { location.hash = ""; });
  $("#search").addEventListener("input", showStudies);
  document.addEventListener("keydown", function (e) {
    if ($("#viewer").hidden || e.target === $("#search")) return;
    if (e.key === "ArrowDown" || e.key === "ArrowRight") show(S.index + 1);
    else if (e.key === "ArrowUp" || e.key === "ArrowLeft") show(S.index - 1);
    else if (e.key === "Escape") location.hash = "";
  });
  // Rotating an iPad or resizing a window: draw again at the stage's new size.
  if (window.ResizeObserver) new ResizeObserver(function () { draw(); }).observe(stage);
  else window.addEventListener("resize", function () { draw(); });

  // ------------------------------------------------------------------ routing

  function route() {
    var m = /study=([^&]+)(?:&series=([^&]+))?/.exec(location.hash);
    if (m) return openStudy(decodeURIComponent(m[1]), m[2] && decodeURIComponent(m[2]));
    $("#viewer").hidden = true; $("#browser").hidden = false; $("#back").hidden = true;
    $("#search").hidden = false;
    loadStudies();
  }
  window.addEventListener("hashchange", route);
  api("system").then(function (s) {
    $("#title").textContent = s.Name || "Viewer";
    document.title = (s.Name || "pipacs") + " viewer";
  }).catch(function () {});
  route();
})();
