// pipacs viewer: a study browser and a teaching viewer on pipacs' REST routes (no libraries).
// Images are rendered by the server (/instances/{id}/rendered with the window and size), so
// the tablet only draws them: one finger uses the chosen tool, two fingers zoom and pan.
// Measurements are made in the image's own pixels and shown in mm from PixelSpacing; region
// statistics read the frame's values (/frames/{n}/numpy, rescaled: Hounsfield units for CT).
"use strict";
(function () {
  var $ = function (s, root) { return (root || document).querySelector(s); };
  var ROOT = new URL("../", location.href).pathname;
  var MAX_CACHE = 80;
  var MEASURES = { length: 2, angle: 3, ellipse: 2 };
  var S = { studies: [], study: null, series: [], tool: "scroll", panes: [], active: null,
    link: true, cine: null, drawn: 0 };

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
  function each(sel, fn) { Array.prototype.forEach.call(document.querySelectorAll(sel), fn); }
  function el(name, cls, text) {
    var e = document.createElement(name);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function dpr() { return Math.min(window.devicePixelRatio || 1, 2); }

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
    if (S.study && S.study.ID === id) { if (seriesId) openSeries(S.active, seriesId); return; }
    S.study = { ID: id }; S.series = []; $("#series").textContent = "";
    S.panes.forEach(function (P) { P.img = null; P.seriesId = null; });
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
          f.addEventListener("click", function () { openSeries(S.active, se.ID); });
          nav.appendChild(f);
        });
        if (!S.series.length) return status("This study has no series");
        S.panes.forEach(function (P, k) {
          var se = S.series[Math.min(k, S.series.length - 1)];
          openSeries(P, k === 0 && seriesId ? seriesId : se.ID);
        });
      }).catch(fail);
  }

  function markSeries() {
    each("#series figure", function (f) {
      f.classList.toggle("on", S.active && f.dataset.id === S.active.seriesId);
    });
  }

  function openSeries(P, id) {
    P.seriesId = id; P.marks = {}; P.draft = null; P.values = null;
    markSeries();
    api("series/" + id + "/instances").then(function (list) {
      if (P.seriesId !== id) return;
      list.sort(function (a, b) {
        var x = first(tag(a.MainDicomTags, "InstanceNumber")), y = first(tag(b.MainDicomTags, "InstanceNumber"));
        if (isNaN(x) || isNaN(y) || x === y) return (a.IndexInSeries || 0) - (b.IndexInSeries || 0);
        return x - y;
      });
      // A multi-frame instance (cine loop, US clip) is as many images as it has frames.
      P.items = [];
      list.forEach(function (i) {
        var n = parseInt(tag(i.MainDicomTags, "NumberOfFrames"), 10) || 1;
        for (var f = 0; f < n; f++) P.items.push({ id: i.ID, frame: n > 1 ? f : null });
      });
      P.slider.max = String(Math.max(0, P.items.length - 1));
      P.cache.clear();
      resetView(P);
      var middle = Math.floor(P.items.length / 2);
      if (!P.items.length) return status("This series has no image");
      return api("instances/" + P.items[middle].id + "/simplified-tags").then(function (t) {
        if (P.seriesId !== id) return;
        P.cols = parseInt(t.Columns, 10) || 0; P.rows = parseInt(t.Rows, 10) || 0;
        P.colour = /RGB|YBR|PALETTE/.test(t.PhotometricInterpretation || "");
        var sp = String(t.PixelSpacing || t.ImagerPixelSpacing || "").split("\\").map(parseFloat);
        P.spacing = sp.length === 2 && sp[0] > 0 && sp[1] > 0 ? sp : null;
        P.units = t.Modality === "CT" ? "HU" : "";
        var c = first(t.WindowCenter), w = first(t.WindowWidth);
        if (isNaN(c) || isNaN(w) || w <= 0) {
          var slope = first(t.RescaleSlope) || 1, icpt = first(t.RescaleIntercept) || 0;
          var bits = parseInt(t.BitsStored, 10) || 8;
          c = icpt + slope * Math.pow(2, bits - 1); w = slope * Math.pow(2, bits);
        }
        P.defaultWin = { c: c, w: w }; P.win = null;
        if (P === S.active) $("#preset").value = "";
        show(P, middle);
      });
    }).catch(fail);
  }

  // ------------------------------------------------------------------ images

  function itemPath(P, i) {
    var it = P.items[i];
    return "instances/" + it.id + (it.frame === null ? "" : "/frames/" + it.frame);
  }

  function imageUrl(P, i) {
    var q = [], want = Math.round(Math.max(P.stage.clientWidth, P.stage.clientHeight) * dpr());
    if (P.cols && P.rows && Math.max(P.cols, P.rows) > want) q.push("width=" + want, "height=" + want);
    if (P.win) q.push("window-center=" + P.win.c.toFixed(1), "window-width=" + P.win.w.toFixed(1));
    q.push("quality=90");
    return ROOT + itemPath(P, i) + "/rendered?" + q.join("&");
  }

  function load(P, url) {
    var hit = P.cache.get(url);
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
    p.catch(function () { P.cache.delete(url); });
    P.cache.set(url, p);
    if (P.cache.size > MAX_CACHE) P.cache.delete(P.cache.keys().next().value);
    return p;
  }

  function show(P, i, linked) {
    if (!P.items.length) return;
    i = Math.max(0, Math.min(P.items.length - 1, i));
    if (i !== P.index) P.draft = null;
    P.index = i; P.slider.value = String(i);
    var url = imageUrl(P, i), series = P.seriesId;
    P.pending = url;
    load(P, url).then(function (img) {
      if (P.seriesId !== series || P.pending !== url) return;
      P.img = img; draw(P); status("");
      prefetch(P, i);
    }).catch(fail);
    drawOverlay(P);
    if (!linked && S.link) {
      S.panes.forEach(function (Q) {
        if (Q === P || !Q.items.length) return;
        var at = P.items.length > 1 ? i / (P.items.length - 1) : 0;
        show(Q, Math.round(at * (Q.items.length - 1)), true);
      });
    }
  }

  function prefetch(P, i) {
    [1, -1, 2, -2, 3, -3].forEach(function (d, k) {
      var j = i + d;
      if (j >= 0 && j < P.items.length) setTimeout(function () { load(P, imageUrl(P, j)); }, 40 * k);
    });
  }

  function draw(P) {
    var r = dpr(), w = Math.round(P.stage.clientWidth * r), h = Math.round(P.stage.clientHeight * r);
    var canvas = P.canvas;
    if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
    var ctx = canvas.getContext("2d");
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#000"; ctx.fillRect(0, 0, w, h);
    var img = P.img;
    if (!img) return;
    var fit = Math.min(w / img.naturalWidth, h / img.naturalHeight) * P.zoom;
    var iw = img.naturalWidth * fit, ih = img.naturalHeight * fit;
    var ox = (w - iw) / 2 + P.panX * r, oy = (h - ih) / 2 + P.panY * r;
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(img, ox, oy, iw, ih);
    // Device pixels per pixel of the DICOM image (the rendered one may be smaller).
    P.geom = { ox: ox, oy: oy, k: iw / (P.cols || img.naturalWidth) };
    drawMarks(P, ctx);
    S.drawn += 1;
    document.body.setAttribute("data-drawn", String(S.drawn));
    drawOverlay(P);
  }

  function drawOverlay(P) {
    var p = (S.study && S.study.PatientMainDicomTags) || {}, m = (S.study && S.study.MainDicomTags) || {};
    var se = S.series.filter(function (s) { return s.ID === P.seriesId; })[0];
    var win = P.win || P.defaultWin;
    P.overlay.textContent = [
      person(p.PatientName) + "  " + (p.PatientID || ""),
      date(m.StudyDate || "") + "  " + (m.StudyDescription || ""),
      se ? (tag(se.MainDicomTags, "Modality") + " " + tag(se.MainDicomTags, "SeriesDescription")) : "",
      P.items.length ? "Image " + (P.index + 1) + " / " + P.items.length : "",
      win && !P.colour ? "W " + Math.round(win.w) + "  L " + Math.round(win.c) : "",
      P.zoom !== 1 ? "Zoom " + P.zoom.toFixed(2) + "x" : ""
    ].filter(Boolean).join("\n");
  }

  function resetView(P) { P.zoom = 1; P.panX = 0; P.panY = 0; }

  // Window changes are rendered by the server: one request at a time, the latest wins.
  function applyWindow(P) {
    if (P.windowBusy) return;
    P.windowBusy = true;
    P.cache.clear();
    var url = imageUrl(P, P.index);
    P.pending = url;
    load(P, url).then(function (img) {
      if (P.pending === url) { P.img = img; draw(P); }
    }).catch(fail).then(function () {
      P.windowBusy = false;
      if (P.pending !== imageUrl(P, P.index)) applyWindow(P);
    });
  }

  // ------------------------------------------------------------------ measurements

  function toImage(P, clientX, clientY) {
    var rect = P.canvas.getBoundingClientRect(), g = P.geom, r = dpr();
    return { x: ((clientX - rect.left) * r - g.ox) / g.k, y: ((clientY - rect.top) * r - g.oy) / g.k };
  }
  function toCanvas(P, pt) { return { x: P.geom.ox + pt.x * P.geom.k, y: P.geom.oy + pt.y * P.geom.k }; }
  // A vector between two image points in mm (columns along x, rows along y), else in pixels.
  function vec(P, a, b) {
    var sp = P.spacing || [1, 1];
    return { x: (b.x - a.x) * sp[1], y: (b.y - a.y) * sp[0] };
  }
  function unit(P) { return P.spacing ? "mm" : "px"; }

  function label(P, m) {
    var a = m.pts[0], b = m.pts[1];
    if (m.type === "length") {
      var v = vec(P, a, b);
      return Math.hypot(v.x, v.y).toFixed(1) + " " + unit(P);
    }
    if (m.type === "angle") {
      if (m.pts.length < 3) return "";
      var u = vec(P, b, a), w = vec(P, b, m.pts[2]);
      var cos = (u.x * w.x + u.y * w.y) / (Math.hypot(u.x, u.y) * Math.hypot(w.x, w.y) || 1);
      return (Math.acos(Math.max(-1, Math.min(1, cos))) * 180 / Math.PI).toFixed(1) + "°";
    }
    var s = m.stats;
    var sp = P.spacing || [1, 1], area = Math.PI * Math.abs(b.x - a.x) / 2 * Math.abs(b.y - a.y) / 2 * sp[0] * sp[1];
    var size = area.toFixed(1) + " " + unit(P) + "²";
    if (!s) return "… " + size;
    if (!s.n) return "no pixel inside, " + size;
    var u2 = P.units ? " " + P.units : "";
    return "mean " + s.mean.toFixed(1) + u2 + ", SD " + s.sd.toFixed(1) + ", " + size;
  }

  function drawMarks(P, ctx) {
    var list = (P.marks[P.index] || []).concat(P.draft ? [P.draft] : []);
    ctx.lineWidth = 2 * dpr(); ctx.strokeStyle = "#4f4"; ctx.fillStyle = "#4f4";
    ctx.font = Math.round(13 * dpr()) + "px sans-serif";
    list.forEach(function (m) {
      var p = m.pts.map(function (pt) { return toCanvas(P, pt); });
      ctx.beginPath();
      if (m.type === "ellipse") {
        ctx.ellipse((p[0].x + p[1].x) / 2, (p[0].y + p[1].y) / 2, Math.abs(p[1].x - p[0].x) / 2,
          Math.abs(p[1].y - p[0].y) / 2, 0, 0, 2 * Math.PI);
      } else {
        ctx.moveTo(p[0].x, p[0].y);
        p.slice(1).forEach(function (q) { ctx.lineTo(q.x, q.y); });
      }
      ctx.stroke();
      var end = p[p.length - 1];
      ctx.fillText(label(P, m), end.x + 6 * dpr(), end.y - 6 * dpr());
    });
    P.readout.textContent = "";
    (P.marks[P.index] || []).forEach(function (m) { P.readout.appendChild(el("li", m.type, label(P, m))); });
  }

  // The frame's values, in the modality's units, for region statistics (one frame cached).
  function values(P) {
    var it = P.items[P.index], key = "instances/" + it.id + "/frames/" + (it.frame || 0);
    if (P.values && P.values.key === key) return P.values.promise;
    var promise = fetch(ROOT + key + "/numpy?rescale=1", { credentials: "same-origin" })
      .then(function (r) {
        if (!r.ok) throw new Error(r.status + " reading pixel values");
        return r.arrayBuffer();
      }).then(parseNpy);
    P.values = { key: key, promise: promise };
    promise.catch(function () { P.values = null; });
    return promise;
  }

  // A .npy file (NumPy's format 1.0/2.0): a little-endian array, its shape in the header.
  function parseNpy(buf) {
    var bytes = new Uint8Array(buf), v2 = bytes[6] >= 2;
    var dv = new DataView(buf), hlen = v2 ? dv.getUint32(8, true) : dv.getUint16(8, true);
    var start = (v2 ? 12 : 10), header = String.fromCharCode.apply(null, bytes.subarray(start, start + hlen));
    var descr = /'descr':\s*'([<|=]?)([a-z]\d+)'/.exec(header), shape = /'shape':\s*\(([^)]*)\)/.exec(header);
    var types = { f4: Float32Array, f8: Float64Array, i2: Int16Array, u2: Uint16Array, u1: Uint8Array,
      i1: Int8Array, i4: Int32Array, u4: Uint32Array };
    if (!descr || !shape || !types[descr[2]]) throw new Error("unexpected pixel values: " + header);
    var dims = shape[1].split(",").map(function (x) { return parseInt(x, 10); }).filter(function (x) { return x > 0; });
    var T = types[descr[2]], offset = start + hlen, count = dims.reduce(function (a, b) { return a * b; }, 1);
    var data = offset % T.BYTES_PER_ELEMENT ? new T(buf.slice(offset), 0, count) : new T(buf, offset, count);
    return { data: data, rows: dims[0], cols: dims[1], channels: dims[2] || 1 };
  }

  function regionStats(arr, a, b) {
    var cx = (a.x + b.x) / 2, cy = (a.y + b.y) / 2, rx = Math.abs(b.x - a.x) / 2, ry = Math.abs(b.y - a.y) / 2;
    var n = 0, sum = 0, sq = 0;
    if (rx <= 0 || ry <= 0) return { n: 0 };
    var y0 = Math.max(0, Math.floor(cy - ry)), y1 = Math.min(arr.rows - 1, Math.ceil(cy + ry));
    var x0 = Math.max(0, Math.floor(cx - rx)), x1 = Math.min(arr.cols - 1, Math.ceil(cx + rx));
    for (var y = y0; y <= y1; y++) {
      for (var x = x0; x <= x1; x++) {
        var dx = (x + 0.5 - cx) / rx, dy = (y + 0.5 - cy) / ry;
        if (dx * dx + dy * dy > 1) continue;
        var v = arr.data[(y * arr.cols + x) * arr.channels];
        n++; sum += v; sq += v * v;
      }
    }
    if (!n) return { n: 0 };
    var mean = sum / n;
    return { n: n, mean: mean, sd: Math.sqrt(Math.max(0, sq / n - mean * mean)) };
  }

  function finish(P, m) {
    var index = P.index;
    (P.marks[index] = P.marks[index] || []).push(m);
    if (m.type === "ellipse") {
      values(P).then(function (arr) {
        m.stats = regionStats(arr, m.pts[0], m.pts[1]);
        if (P.index === index) draw(P);
      }).catch(fail);
    }
    draw(P);
  }

  // ------------------------------------------------------------------ gestures

  function act(P, dx, dy) {
    if (S.tool === "scroll") {
      var step = Math.max(4, Math.min(20, P.stage.clientHeight / Math.max(1, P.items.length)));
      P.scrollRest += dy;
      var n = Math.trunc(P.scrollRest / step);
      if (n) { P.scrollRest -= n * step; show(P, P.index + n); }
    } else if (S.tool === "window" && !P.colour && P.defaultWin) {
      var win = P.win || { c: P.defaultWin.c, w: P.defaultWin.w };
      var k = Math.max(win.w, 16) / 256;
      P.win = { c: win.c - dy * k, w: Math.max(1, win.w + dx * k) };
      drawOverlay(P);
      applyWindow(P);
    } else if (S.tool === "pan") {
      P.panX += dx; P.panY += dy; draw(P);
    } else if (S.tool === "zoom") {
      P.zoom = Math.max(0.25, Math.min(16, P.zoom * Math.exp(-dy / 200))); draw(P);
    }
  }

  function twoFingers(P) {
    var p = Array.from(P.pointers.values());
    return { d: Math.hypot(p[0].x - p[1].x, p[0].y - p[1].y) || 1,
      x: (p[0].x + p[1].x) / 2, y: (p[0].y + p[1].y) / 2 };
  }

  function setActive(P) {
    S.active = P;
    S.panes.forEach(function (Q) { Q.el.classList.toggle("on", Q === P && S.panes.length > 1); });
    markSeries();
  }

  function wire(P) {
    var stage = P.stage;
    stage.addEventListener("pointerdown", function (e) {
      stage.setPointerCapture(e.pointerId);
      setActive(P);
      P.pointers.set(e.pointerId, { x: e.clientX, y: e.clientY });
      P.pinch = P.pointers.size === 2 ? twoFingers(P) : null;
      if (P.pointers.size === 1 && MEASURES[S.tool] && P.img && P.geom) {
        var pt = toImage(P, e.clientX, e.clientY);
        if (P.draft && P.draft.type === "angle" && P.draft.pts.length === 2) P.draft.pts.push(pt);
        else P.draft = { type: S.tool, pts: [pt, { x: pt.x, y: pt.y }] };
        draw(P);
      } else if (P.pointers.size === 2 && P.draft) {
        P.draft = null; draw(P);  // a second finger: pinch, not a measurement
      }
      e.preventDefault();
    });
    stage.addEventListener("pointermove", function (e) {
      var last = P.pointers.get(e.pointerId);
      if (!last) return;
      var dx = e.clientX - last.x, dy = e.clientY - last.y;
      last.x = e.clientX; last.y = e.clientY;
      if (P.pointers.size === 2 && P.pinch) {
        var now = twoFingers(P);
        P.zoom = Math.max(0.25, Math.min(16, P.zoom * now.d / P.pinch.d));
        P.panX += now.x - P.pinch.x; P.panY += now.y - P.pinch.y;
        P.pinch = now; draw(P);
      } else if (P.pointers.size === 1 && P.draft) {
        P.draft.pts[P.draft.pts.length - 1] = toImage(P, e.clientX, e.clientY);
        draw(P);
      } else if (P.pointers.size === 1) {
        act(P, dx, dy);
      }
      e.preventDefault();
    });
    function up(e) {
      var had = P.pointers.delete(e.pointerId);
      P.pinch = P.pointers.size === 2 ? twoFingers(P) : null;
      var m = P.draft;
      if (!had || !m || P.pointers.size) return;
      var p = m.pts.map(function (pt) { return toCanvas(P, pt); }), a = p[p.length - 2], b = p[p.length - 1];
      var moved = Math.hypot(b.x - a.x, b.y - a.y) > 3 * dpr();
      if (m.type === "angle" && m.pts.length === 2) {
        if (!moved) P.draft = null;  // the first arm needs a drag; then a tap ends the second
        draw(P);
        return;
      }
      P.draft = null;
      if (moved || m.type === "angle") finish(P, m); else draw(P);
    }
    stage.addEventListener("pointerup", up);
    stage.addEventListener("pointercancel", function (e) { P.draft = null; up(e); draw(P); });
    stage.addEventListener("wheel", function (e) {
      e.preventDefault();
      setActive(P);
      if (e.ctrlKey) { P.zoom = Math.max(0.25, Math.min(16, P.zoom * Math.exp(-e.deltaY / 100))); draw(P); }
      else show(P, P.index + (e.deltaY > 0 ? 1 : -1));
    }, { passive: false });
    stage.addEventListener("dblclick", function () { resetView(P); draw(P); });
    P.slider.addEventListener("input", function () { setActive(P); show(P, parseInt(P.slider.value, 10)); });
    if (window.ResizeObserver) new ResizeObserver(function () { draw(P); }).observe(stage);
  }

  function makePane(box) {
    var P = { el: box, stage: $(".stage", box), canvas: $("canvas", box), overlay: $(".overlay", box),
      readout: $(".readout", box), slider: $(".slider", box), seriesId: null, items: [], index: 0,
      img: null, zoom: 1, panX: 0, panY: 0, win: null, defaultWin: null, cols: 0, rows: 0,
      colour: false, spacing: null, units: "", cache: new Map(), pending: null, marks: {},
      draft: null, values: null, geom: null, pointers: new Map(), pinch: null, scrollRest: 0 };
    wire(P);
    S.panes.push(P);
    return P;
  }

  function compare() {
    if (S.panes.length > 1) {
      var gone = S.panes.pop();
      gone.el.remove();
      setActive(S.panes[0]);
    } else {
      var box = S.panes[0].el.cloneNode(true);
      Array.prototype.forEach.call(box.querySelectorAll("[id]"), function (e) { e.removeAttribute("id"); });
      $("#panes").appendChild(box);
      var P = makePane(box), at = S.series.map(function (s) { return s.ID; }).indexOf(S.panes[0].seriesId);
      var next = S.series[(at + 1) % Math.max(1, S.series.length)];
      setActive(P);
      if (next) openSeries(P, next.ID);
    }
    $("#compare").classList.toggle("on", S.panes.length > 1);
    $("#link").hidden = S.panes.length < 2;
    S.panes.forEach(function (P) { draw(P); });
  }

  function cine() {
    if (S.cine) { clearInterval(S.cine); S.cine = null; }
    else {
      S.cine = setInterval(function () {
        var P = S.active;
        if (!P || !P.items.length || $("#viewer").hidden) return;
        show(P, P.index + 1 < P.items.length ? P.index + 1 : 0);
      }, 1000 / (parseInt($("#fps").value, 10) || 10));
    }
    $("#cine").classList.toggle("on", !!S.cine);
    $("#cine").innerHTML = S.cine ? "&#10074;&#10074;" : "&#9654;";
  }

  function fullScreen() {
    var on = !document.body.classList.contains("full"), root = document.documentElement;
    document.body.classList.toggle("full", on);
    $("#full").classList.toggle("on", on);
    var ask = on ? (root.requestFullscreen || root.webkitRequestFullscreen)
      : (document.exitFullscreen || document.webkitExitFullscreen);
    var owner = on ? root : document;
    if (ask && (on || document.fullscreenElement || document.webkitFullscreenElement)) {
      try { var p = ask.call(owner); if (p && p.catch) p.catch(function () {}); } catch (e) { /* CSS only */ }
    }
  }

  // iOS Safari: no page zoom from gestures on the image.
  ["gesturestart", "gesturechange"].forEach(function (t) {
    document.addEventListener(t, function (e) { e.preventDefault(); });
  });
  each("#tools [data-tool]", function (b) {
    b.addEventListener("click", function () {
      S.tool = b.dataset.tool;
      S.panes.forEach(function (P) { if (P.draft) { P.draft = null; draw(P); } });
      each("#tools [data-tool]", function (o) { o.classList.toggle("on", o === b); });
    });
  });
  $("#preset").addEventListener("change", function () {
    var P = S.active, v = this.value.split(",").map(parseFloat);
    if (!P || P.colour || !P.defaultWin) return;
    P.win = v.length === 2 ? { c: v[0], w: v[1] } : null;
    drawOverlay(P);
    applyWindow(P);
  });
  $("#cine").addEventListener("click", cine);
  $("#fps").addEventListener("change", function () { if (S.cine) { cine(); cine(); } });
  $("#compare").addEventListener("click", compare);
  $("#link").addEventListener("click", function () {
    S.link = !S.link; this.classList.toggle("on", S.link);
  });
  $("#clear").addEventListener("click", function () {
    var P = S.active; if (!P) return;
    delete P.marks[P.index]; P.draft = null; draw(P);
  });
  $("#reset").addEventListener("click", function () {
    var P = S.active; if (!P) return;
    resetView(P); $("#preset").value = "";
    if (P.win) { P.win = null; applyWindow(P); } else draw(P);
  });
  $("#full").addEventListener("click", fullScreen);
  document.addEventListener("fullscreenchange", function () {
    if (!document.fullscreenElement && document.body.classList.contains("full")) fullScreen();
  });
  $("#back").addEventListener("click", function () { location.hash = ""; });
  $("#search").addEventListener("input", showStudies);
  document.addEventListener("keydown", function (e) {
    var P = S.active;
    if ($("#viewer").hidden || e.target === $("#search") || !P) return;
    if (e.key === "ArrowDown" || e.key === "ArrowRight") show(P, P.index + 1);
    else if (e.key === "ArrowUp" || e.key === "ArrowLeft") show(P, P.index - 1);
    else if (e.key === "Escape") location.hash = "";
  });
  setActive(makePane($(".pane")));
  // For scripts and tests: where an image pixel is on the screen (CSS pixels).
  window.pipacsViewer = {
    panes: S.panes,
    toClient: function (k, x, y) {
      var P = S.panes[k], rect = P.canvas.getBoundingClientRect(), c = toCanvas(P, { x: x, y: y });
      return { x: rect.left + c.x / dpr(), y: rect.top + c.y / dpr() };
    }
  };

  // ------------------------------------------------------------------ routing

  function route() {
    var m = /study=([^&]+)(?:&series=([^&]+))?/.exec(location.hash);
    if (m) return openStudy(decodeURIComponent(m[1]), m[2] && decodeURIComponent(m[2]));
    if (S.cine) cine();
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
