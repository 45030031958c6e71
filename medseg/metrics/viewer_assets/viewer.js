/* medseg report viewer: slices of one case at a time in three planes, with the prediction,
 * the reference and the uncertainty over the image. No dependencies, works from file://.
 *
 * The page holds a JSON block (#medseg-report) describing the labels and the cases, a
 * table of cases (#case-table, rows tr[data-case]) and an empty #viewer. Each case's data
 * is a script (viewer/cases/<n>.js) calling medsegViewer.addCase(id, data), loaded when the
 * case is first shown; arrays are RAS-ordered (x fastest-varying last: index = (x*Y + y)*Z + z),
 * gzip + base64 (see medseg/metrics/viewer_data.py).
 */
(function () {
  "use strict";

  var SIZE = 512;
  // Radiological convention: the patient's right on the screen's left for axial and
  // coronal slices; anterior / superior up. letters: left, right, top, bottom.
  var PLANES = {
    axial: {fixed: 2, h: 0, v: 1, flipH: true, letters: ["R", "L", "A", "P"]},
    coronal: {fixed: 1, h: 0, v: 2, flipH: true, letters: ["R", "L", "S", "I"]},
    sagittal: {fixed: 0, h: 1, v: 2, flipH: false, letters: ["P", "A", "S", "I"]}
  };
  var PRESETS = [
    ["auto", "auto (1–99 %)", null, false],
    ["full", "full range", null, false],
    ["ct-soft", "CT soft tissue (W 400 L 40)", [400, 40], true],
    ["ct-brain", "CT brain (W 80 L 40)", [80, 40], true],
    ["ct-bone", "CT bone (W 1800 L 400)", [1800, 400], true],
    ["ct-lung", "CT lung (W 1500 L −600)", [1500, -600], true]
  ];
  var PALETTE = [
    [255, 72, 72], [72, 164, 255], [80, 220, 80], [255, 204, 40], [196, 96, 255],
    [40, 220, 220], [255, 136, 40], [255, 96, 200], [160, 224, 96], [150, 150, 255],
    [230, 180, 140], [120, 200, 180]
  ];

  var S = {
    config: null, caseId: null, data: null, plane: "axial", pos: [0, 0, 0],
    predMode: "fill", refMode: "outline", opacity: 0.45, uncertainty: false,
    hidden: {}, preset: "auto", window: [1, 0.5], cursor: null,
    loaded: {}, requested: {}, pending: 0, rendered: 0, error: null
  };
  var el = {};

  function color(value) { return PALETTE[(value - 1) % PALETTE.length]; }

  function make(tag, attrs, parent, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) node.textContent = text;
    if (parent) parent.appendChild(node);
    return node;
  }

  // --- data ------------------------------------------------------------------------------

  function bytesOf(b64) {
    var bin = atob(b64), out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }

  function decodeLayer(layer) {
    var stream = new Blob([bytesOf(layer.data)]).stream()
      .pipeThrough(new DecompressionStream("gzip"));
    return new Response(stream).arrayBuffer().then(function (buffer) {
      var b = new Uint8Array(buffer);
      if (layer.dtype !== "uint16") return b;
      var n = b.length / 2, out = new Uint16Array(n);
      for (var i = 0; i < n; i++) out[i] = (b[i] << 8) | b[n + i];
      return out;
    });
  }

  function addCase(id, data) {
    var names = Object.keys(data.layers);
    Promise.all(names.map(function (k) { return decodeLayer(data.layers[k]); }))
      .then(function (arrays) {
        var entry = {id: id, meta: data, layers: {}};
        names.forEach(function (k, i) { entry.layers[k] = arrays[i]; });
        S.loaded[id] = entry;
        S.pending -= 1;
        if (S.caseId === id) useCase(entry);
      })
      .catch(function (err) {
        S.pending -= 1;
        fail("cannot decode the data of case " + id + ": " + err);
      });
  }

  function request(id) {
    var info = S.config.cases[id];
    if (!info) { fail("unknown case " + id); return; }
    if (S.requested[id]) return;
    S.requested[id] = true;
    S.pending += 1;
    var script = document.createElement("script");
    script.src = info.file;
    script.onerror = function () {
      S.pending -= 1;
      fail("cannot load " + info.file + " (is the report folder complete?)");
    };
    document.head.appendChild(script);
  }

  function fail(message) {
    S.error = message;
    el.status.textContent = message;
    console.error("medseg viewer: " + message);
  }

  // --- selection -------------------------------------------------------------------------

  function show(id, plane) {
    if (plane && PLANES[plane]) setPlane(plane, true);
    if (id === S.caseId && S.data) { render(); return; }
    S.caseId = id;
    S.data = null;
    S.cursor = null;
    highlightRow(id);
    describeCase(id);
    if (S.loaded[id]) useCase(S.loaded[id]);
    else { el.status.textContent = "loading " + id + " …"; request(id); }
  }

  function useCase(entry) {
    S.data = entry;
    S.pos = entry.meta.focus.slice();
    S.error = null;
    el.status.textContent = "";
    updatePresets(entry.meta.modality === "CT");
    applyPreset(S.preset);
    updateClassToggles(entry.meta.labels_present);
    el.unc.disabled = !entry.layers.uncertainty;
    render();
  }

  function setPlane(plane, quiet) {
    S.plane = plane;
    var radio = document.getElementById("mv-plane-" + plane);
    if (radio) radio.checked = true;
    if (!quiet) render();
  }

  function highlightRow(id) {
    document.querySelectorAll("tr[data-case]").forEach(function (row) {
      row.classList.toggle("selected", row.getAttribute("data-case") === id);
    });
  }

  function describeCase(id) {
    var info = S.config.cases[id] || {};
    el.panel.textContent = "";
    make("h3", {}, el.panel, id);
    if (info.grid) make("p", {"class": "mv-grid"}, el.panel, info.grid);
    if (info.details && info.details.length) {
      var table = make("table", {"class": "mv-details"}, el.panel);
      info.details.forEach(function (pair) {
        var row = make("tr", {}, table);
        make("th", {}, row, pair[0]);
        make("td", {}, row, pair[1]);
      });
    }
    if (info.montage) {
      make("img", {src: info.montage, alt: "QC montage of " + id, "class": "mv-montage"},
           el.panel);
    }
  }

  // --- window / level --------------------------------------------------------------------

  function updatePresets(isCT) {
    var keep = S.preset;
    el.preset.textContent = "";
    PRESETS.forEach(function (p) {
      if (p[3] && !isCT) return;
      make("option", {value: p[0]}, el.preset, p[1]);
    });
    make("option", {value: "custom"}, el.preset, "custom");
    var valid = Array.prototype.some.call(el.preset.options, function (o) {
      return o.value === keep;
    });
    S.preset = valid ? keep : "auto";
    el.preset.value = S.preset;
  }

  function imageRange() {
    var img = S.data && S.data.layers.image, meta = S.data && S.data.meta.layers.image;
    if (!img) return [0, 1];
    var lo = 65535, hi = 0;
    for (var i = 0; i < img.length; i++) {
      if (img[i] < lo) lo = img[i];
      if (img[i] > hi) hi = img[i];
    }
    return [meta.offset + meta.scale * lo, meta.offset + meta.scale * hi];
  }

  function applyPreset(name) {
    S.preset = name;
    var lo, hi, fixed = PRESETS.filter(function (p) { return p[0] === name; })[0];
    if (name === "custom") return;
    if (fixed && fixed[2]) {
      S.window = fixed[2].slice();
    } else {
      var range = name === "full" ? imageRange()
        : (S.data && S.data.meta.auto_window) || [0, 1];
      lo = range[0]; hi = range[1];
      S.window = [Math.max(hi - lo, 1e-6), (hi + lo) / 2];
    }
    el.ww.value = +S.window[0].toPrecision(4);
    el.wl.value = +S.window[1].toPrecision(4);
  }

  function grayLut() {
    var meta = S.data.meta.layers.image, lut = new Uint8Array(65536);
    var width = S.window[0], lo = S.window[1] - width / 2;
    for (var q = 0; q < 65536; q++) {
      var g = ((meta.offset + meta.scale * q) - lo) / width * 255;
      lut[q] = g < 0 ? 0 : g > 255 ? 255 : g;
    }
    return lut;
  }

  // --- drawing ---------------------------------------------------------------------------

  function layout() {
    var P = PLANES[S.plane], shape = S.data.meta.shape, sp = S.data.meta.spacing;
    var nh = shape[P.h], nv = shape[P.v];
    var wmm = nh * sp[P.h], hmm = nv * sp[P.v], scale = Math.min(SIZE / wmm, SIZE / hmm);
    var dw = Math.max(1, Math.round(wmm * scale)), dh = Math.max(1, Math.round(hmm * scale));
    return {P: P, nh: nh, nv: nv, dw: dw, dh: dh, ox: (SIZE - dw) >> 1, oy: (SIZE - dh) >> 1};
  }

  function strides() {
    var s = S.data.meta.shape;
    return [s[1] * s[2], s[2], 1];
  }

  function offsets(L) {
    var st = strides(), cols = new Int32Array(SIZE).fill(-1), rows = new Int32Array(SIZE).fill(-1);
    for (var cx = L.ox; cx < L.ox + L.dw; cx++) {
      var h = Math.floor((cx - L.ox) * L.nh / L.dw);
      cols[cx] = (L.P.flipH ? L.nh - 1 - h : h) * st[L.P.h];
    }
    for (var cy = L.oy; cy < L.oy + L.dh; cy++) {
      rows[cy] = (L.nv - 1 - Math.floor((cy - L.oy) * L.nv / L.dh)) * st[L.P.v];
    }
    return {cols: cols, rows: rows, base: S.pos[L.P.fixed] * st[L.P.fixed]};
  }

  function blend(px, i, rgb, a) {
    px[i] += (rgb[0] - px[i]) * a;
    px[i + 1] += (rgb[1] - px[i + 1]) * a;
    px[i + 2] += (rgb[2] - px[i + 2]) * a;
  }

  function render() {
    if (!S.data) return;
    var L = layout(), O = offsets(L), layers = S.data.layers;
    var ctx = el.canvas.getContext("2d"), frame = ctx.createImageData(SIZE, SIZE);
    var px = frame.data, lut = layers.image ? grayLut() : null;
    var pred = layers.prediction, ref = layers.reference, unc = layers.uncertainty;
    var showUnc = S.uncertainty && unc, hidden = S.hidden, a = S.opacity;
    var predPlane = new Uint16Array(SIZE * SIZE), refPlane = new Uint16Array(SIZE * SIZE);
    var predFill = S.predMode === "fill", refFill = ref && S.refMode === "fill";
    for (var cy = 0; cy < SIZE; cy++) {
      var ro = O.rows[cy];
      for (var cx = 0; cx < SIZE; cx++) {
        var p = cy * SIZE + cx, i = 4 * p, co = O.cols[cx];
        px[i + 3] = 255;
        if (ro < 0 || co < 0) continue;
        var idx = O.base + ro + co;
        var g = lut ? lut[layers.image[idx]] : 40;
        px[i] = px[i + 1] = px[i + 2] = g;
        if (showUnc && unc[idx]) {
          var u = unc[idx] / 255;
          blend(px, i, [255, 255 * (1 - u), 0], Math.min(1, a * 2 * u));
        }
        var pv = pred[idx], rv = ref ? ref[idx] : 0;
        if (S.predMode !== "off" && pv && !hidden[pv]) {
          predPlane[p] = pv;
          if (predFill) blend(px, i, color(pv), a);
        }
        if (ref && S.refMode !== "off" && rv && !hidden[rv]) {
          refPlane[p] = rv;
          if (refFill) blend(px, i, color(rv), a);
        }
      }
    }
    if (S.predMode === "outline") outline(px, predPlane, false);
    if (ref && S.refMode === "outline") outline(px, refPlane, true);
    ctx.putImageData(frame, 0, 0);
    annotate(ctx, L);
    updateSlider(L);
    S.rendered += 1;
  }

  // Pixels of a class whose neighbours (up to 2 pixels away) hold another value; the
  // reference is dashed so that it stays distinct from the prediction.
  function outline(px, plane, dashed) {
    for (var y = 0; y < SIZE; y++) {
      for (var x = 0; x < SIZE; x++) {
        var p = y * SIZE + x, v = plane[p];
        if (!v) continue;
        if (dashed && ((x + y) >> 2) & 1) continue;
        var edge = x < 2 || y < 2 || x >= SIZE - 2 || y >= SIZE - 2 ||
          plane[p - 1] !== v || plane[p + 1] !== v || plane[p - SIZE] !== v ||
          plane[p + SIZE] !== v || plane[p - 2] !== v || plane[p + 2] !== v ||
          plane[p - 2 * SIZE] !== v || plane[p + 2 * SIZE] !== v;
        if (edge) {
          var rgb = color(v), i = 4 * p;
          px[i] = rgb[0]; px[i + 1] = rgb[1]; px[i + 2] = rgb[2];
        }
      }
    }
  }

  function annotate(ctx, L) {
    var n = S.data.meta.shape[L.P.fixed], letters = L.P.letters;
    ctx.font = "14px sans-serif";
    ctx.fillStyle = "#ffe14d";
    ctx.textAlign = "left"; ctx.textBaseline = "middle";
    ctx.fillText(letters[0], L.ox + 4, SIZE / 2);
    ctx.textAlign = "right";
    ctx.fillText(letters[1], L.ox + L.dw - 4, SIZE / 2);
    ctx.textAlign = "center"; ctx.textBaseline = "top";
    ctx.fillText(letters[2], SIZE / 2, L.oy + 4);
    ctx.textBaseline = "bottom";
    ctx.fillText(letters[3], SIZE / 2, L.oy + L.dh - 4);
    ctx.textAlign = "left"; ctx.textBaseline = "top";
    ctx.fillStyle = "#ffffff";
    ctx.fillText(S.plane + " " + (S.pos[L.P.fixed] + 1) + "/" + n, 6, 6);
    if (S.cursor) {
      var c = S.cursor;
      ctx.strokeStyle = "rgba(0,255,0,0.8)";
      ctx.beginPath();
      ctx.moveTo(c[0] - 8, c[1]); ctx.lineTo(c[0] - 3, c[1]);
      ctx.moveTo(c[0] + 3, c[1]); ctx.lineTo(c[0] + 8, c[1]);
      ctx.moveTo(c[0], c[1] - 8); ctx.lineTo(c[0], c[1] - 3);
      ctx.moveTo(c[0], c[1] + 3); ctx.lineTo(c[0], c[1] + 8);
      ctx.stroke();
    }
  }

  function updateSlider(L) {
    var n = S.data.meta.shape[L.P.fixed];
    el.slice.max = n - 1;
    el.slice.value = S.pos[L.P.fixed];
    el.sliceLabel.textContent = (S.pos[L.P.fixed] + 1) + " / " + n;
  }

  function step(delta) {
    if (!S.data) return;
    var axis = PLANES[S.plane].fixed, n = S.data.meta.shape[axis];
    S.pos[axis] = Math.max(0, Math.min(n - 1, S.pos[axis] + delta));
    S.cursor = null;
    render();
  }

  // Canvas pixel -> voxel index of the current slice, or null outside the image.
  function voxelAt(cx, cy) {
    var L = layout();
    if (cx < L.ox || cy < L.oy || cx >= L.ox + L.dw || cy >= L.oy + L.dh) return null;
    var h = Math.floor((cx - L.ox) * L.nh / L.dw), v = L.nv - 1 - Math.floor((cy - L.oy) * L.nv / L.dh);
    var pos = S.pos.slice();
    pos[L.P.h] = L.P.flipH ? L.nh - 1 - h : h;
    pos[L.P.v] = v;
    return pos;
  }

  function canvasPoint(event) {
    var r = el.canvas.getBoundingClientRect();
    return [Math.floor((event.clientX - r.left) * SIZE / r.width),
            Math.floor((event.clientY - r.top) * SIZE / r.height)];
  }

  function labelName(value) {
    var found = S.config.labels.filter(function (l) { return l[0] === value; })[0];
    return found ? found[1] : value ? "label " + value : "background";
  }

  function describeVoxel(pos) {
    var s = strides(), idx = pos[0] * s[0] + pos[1] * s[1] + pos[2], L = S.data.layers;
    var parts = ["voxel " + pos.join(", ")];
    if (L.image) {
      var m = S.data.meta.layers.image;
      parts.push("intensity " + +(m.offset + m.scale * L.image[idx]).toPrecision(5));
    }
    parts.push("prediction: " + labelName(L.prediction[idx]));
    if (L.reference) parts.push("reference: " + labelName(L.reference[idx]));
    if (L.uncertainty) parts.push("uncertainty " + (L.uncertainty[idx] / 255).toFixed(2));
    return parts.join(" · ");
  }

  // --- controls --------------------------------------------------------------------------

  function buildControls(root, config) {
    var bar = make("div", {"class": "mv-bar"}, root);
    Object.keys(PLANES).forEach(function (name) {
      var label = make("label", {"class": "mv-plane"}, bar);
      var input = make("input", {type: "radio", name: "mv-plane", id: "mv-plane-" + name,
                                 value: name}, label);
      if (name === S.plane) input.checked = true;
      input.addEventListener("change", function () { S.cursor = null; setPlane(name); });
      label.appendChild(document.createTextNode(" " + name));
    });
    var sliceBox = make("label", {"class": "mv-slice"}, bar, "slice ");
    el.slice = make("input", {type: "range", id: "mv-slice", min: 0, max: 0, value: 0}, sliceBox);
    el.sliceLabel = make("span", {id: "mv-slice-label"}, sliceBox);
    el.slice.addEventListener("input", function () {
      S.pos[PLANES[S.plane].fixed] = +el.slice.value;
      S.cursor = null;
      render();
    });
    el.canvas = make("canvas", {id: "mv-canvas", width: SIZE, height: SIZE, tabindex: 0}, root);
    el.status = make("div", {id: "mv-status"}, root);
    wireCanvas();

    var opts = make("div", {"class": "mv-options"}, root);
    el.pred = select(opts, "mv-pred", "prediction", ["fill", "outline", "off"], S.predMode,
                     function (v) { S.predMode = v; });
    if (config.layers.reference) {
      el.ref = select(opts, "mv-ref", "reference", ["outline", "fill", "off"], S.refMode,
                      function (v) { S.refMode = v; });
    }
    var opacity = make("label", {}, opts, "opacity ");
    el.opacity = make("input", {type: "range", id: "mv-opacity", min: 0, max: 100,
                                value: Math.round(S.opacity * 100)}, opacity);
    el.opacity.addEventListener("input", function () {
      S.opacity = el.opacity.value / 100;
      render();
    });
    var uncLabel = make("label", {}, opts);
    el.unc = make("input", {type: "checkbox", id: "mv-unc"}, uncLabel);
    uncLabel.appendChild(document.createTextNode(" uncertainty"));
    if (!config.layers.uncertainty) uncLabel.style.display = "none";
    el.unc.addEventListener("change", function () {
      S.uncertainty = el.unc.checked;
      if (S.uncertainty && S.predMode === "fill") {  // keep the heat map readable
        S.predMode = "outline";
        el.pred.value = "outline";
      }
      render();
    });

    var win = make("div", {"class": "mv-window"}, root);
    make("span", {}, win, "window ");
    el.preset = make("select", {id: "mv-preset"}, win);
    el.preset.addEventListener("change", function () { applyPreset(el.preset.value); render(); });
    el.ww = numberBox(win, "mv-ww", "W");
    el.wl = numberBox(win, "mv-wl", "L");
    updatePresets(false);
    el.classes = make("div", {id: "mv-classes"}, root);
    config.labels.forEach(function (pair) {
      var label = make("label", {"class": "mv-class", "data-label": pair[0]}, el.classes);
      var box = make("input", {type: "checkbox", id: "mv-class-" + pair[0]}, label);
      box.checked = true;
      box.addEventListener("change", function () {
        S.hidden[pair[0]] = !box.checked;
        render();
      });
      var swatch = make("span", {"class": "mv-swatch"}, label);
      swatch.style.background = "rgb(" + color(pair[0]).join(",") + ")";
      label.appendChild(document.createTextNode(pair[1]));
    });
    el.panel = make("div", {id: "mv-panel"}, root);
  }

  function select(parent, id, title, values, current, onChange) {
    var label = make("label", {}, parent, title + " ");
    var node = make("select", {id: id}, label);
    values.forEach(function (v) { make("option", {value: v}, node, v); });
    node.value = current;
    node.addEventListener("change", function () { onChange(node.value); render(); });
    return node;
  }

  function numberBox(parent, id, title) {
    var label = make("label", {}, parent, " " + title + " ");
    var node = make("input", {type: "number", id: id, step: "any"}, label);
    node.addEventListener("change", function () {
      var w = parseFloat(el.ww.value), l = parseFloat(el.wl.value);
      if (!(w > 0) || !isFinite(l)) return;
      S.window = [w, l];
      S.preset = "custom";
      el.preset.value = "custom";
      render();
    });
    return node;
  }

  function updateClassToggles(present) {
    document.querySelectorAll(".mv-class").forEach(function (label) {
      var value = +label.getAttribute("data-label");
      label.classList.toggle("absent", present.indexOf(value) < 0);
    });
  }

  function wireCanvas() {
    var c = el.canvas;
    c.addEventListener("wheel", function (event) {
      event.preventDefault();
      step(event.deltaY > 0 ? -1 : 1);
    }, {passive: false});
    c.addEventListener("keydown", function (event) {
      var keys = {ArrowUp: 1, PageUp: 5, ArrowDown: -1, PageDown: -5};
      var planes = {a: "axial", c: "coronal", s: "sagittal"};
      if (keys[event.key]) { event.preventDefault(); step(keys[event.key]); }
      else if (planes[event.key]) setPlane(planes[event.key]);
    });
    c.addEventListener("click", function (event) {
      if (!S.data) return;
      var point = canvasPoint(event), pos = voxelAt(point[0], point[1]);
      if (!pos) return;
      S.pos = pos;
      S.cursor = point;
      render();
    });
    c.addEventListener("mousemove", function (event) {
      if (!S.data) return;
      var point = canvasPoint(event), pos = voxelAt(point[0], point[1]);
      el.status.textContent = pos ? describeVoxel(pos) : "";
    });
  }

  // --- case table ------------------------------------------------------------------------

  function sortTable(table, col, descending) {
    var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
    var key = function (row) {
      var cell = row.querySelector('[data-col="' + col + '"]');
      var raw = cell ? cell.getAttribute("data-v") : "";
      var num = parseFloat(raw);
      return raw === "" || raw === null ? null : isNaN(num) ? raw : num;
    };
    rows.sort(function (r1, r2) {
      var a = key(r1), b = key(r2);
      if (a === null || b === null) return a === b ? 0 : a === null ? 1 : -1;  // blanks last
      var c = a < b ? -1 : a > b ? 1 : 0;
      if (c === 0) c = r1.getAttribute("data-case") < r2.getAttribute("data-case") ? -1 : 1;
      return descending ? -c : c;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    table.querySelectorAll("th[data-col]").forEach(function (th) {
      var on = th.getAttribute("data-col") === String(col);
      th.setAttribute("aria-sort", on ? (descending ? "descending" : "ascending") : "none");
    });
  }

  function wireTable(table, initial) {
    table.querySelectorAll("th[data-col]").forEach(function (th) {
      th.addEventListener("click", function () {
        var col = th.getAttribute("data-col");
        sortTable(table, col, th.getAttribute("aria-sort") === "ascending");
      });
    });
    table.tBodies[0].addEventListener("click", function (event) {
      var row = event.target.closest("tr[data-case]");
      if (!row || event.target.closest("a")) return;
      location.hash = caseHash(row.getAttribute("data-case"), S.plane);
    });
    if (initial) sortTable(table, initial.column, initial.descending);
  }

  function caseHash(id, plane) {
    return "#case=" + encodeURIComponent(id) + "&plane=" + plane;
  }

  function fromHash() {
    var params = {};
    location.hash.replace(/^#/, "").split("&").forEach(function (part) {
      var kv = part.split("=");
      if (kv.length === 2) params[kv[0]] = decodeURIComponent(kv[1]);
    });
    return params;
  }

  function onHash() {
    var params = fromHash();
    if (params["case"] && S.config.cases[params["case"]]) show(params["case"], params.plane);
  }

  function start() {
    var block = document.getElementById("medseg-report"), root = document.getElementById("viewer");
    if (!block || !root) return;
    S.config = JSON.parse(block.textContent);
    buildControls(root, S.config);
    var table = document.getElementById("case-table");
    if (table) wireTable(table, S.config.initial_sort);
    window.addEventListener("hashchange", onHash);
    var params = fromHash();
    if (params["case"] && S.config.cases[params["case"]]) { onHash(); return; }
    var first = document.querySelector("#case-table tbody tr[data-case]");
    var id = first ? first.getAttribute("data-case") : Object.keys(S.config.cases)[0];
    if (id) show(id);
  }

  window.medsegViewer = {addCase: addCase, show: show, setPlane: setPlane, render: render,
                         state: S, caseHash: caseHash};
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
