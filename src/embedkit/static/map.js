/* embedkit map: draws the points of `embedkit map` (or Datasette's /-/map page) on a canvas.
 * No dependencies, nothing fetched. Each element with data-embedkit-map="ID" gets the map of the
 * JSON in the script element ID: {title, total, link, groups: [{name, color, count}],
 * points: {id, x, y, group, title, text, and optionally href: each item's URL}}; link is a
 * URL with {id} in it. Scroll zooms, dragging moves, double-click resets,
 * hovering shows an item, clicking opens its link (or keeps it shown); the legend hides groups.
 */
(function () {
  "use strict";

  var STYLE =
    ".embedkit-map{position:relative;display:flex;min-height:300px;font:13px/1.4 system-ui,sans-serif}" +
    ".embedkit-map canvas{flex:1;min-width:0;cursor:grab;touch-action:none}" +
    ".embedkit-map canvas.embedkit-map-dragging{cursor:grabbing}" +
    ".embedkit-map-legend{width:16em;overflow:auto;margin:0;padding:0.5em;list-style:none;border-left:1px solid #ddd}" +
    ".embedkit-map-legend li{cursor:pointer;padding:1px 0;user-select:none}" +
    ".embedkit-map-legend li.embedkit-map-hidden{opacity:0.35}" +
    ".embedkit-map-legend span{display:inline-block;width:0.8em;height:0.8em;border-radius:50%;margin-right:0.4em}" +
    ".embedkit-map-tip{position:absolute;max-width:24em;padding:0.4em 0.6em;background:#fff;border:1px solid #999;" +
    "border-radius:4px;box-shadow:0 2px 6px rgba(0,0,0,.2);pointer-events:none;display:none;z-index:2}" +
    ".embedkit-map-tip.embedkit-map-pinned{pointer-events:auto}" +
    ".embedkit-map-tip b{display:block}.embedkit-map-tip small{color:#666;display:block}" +
    ".embedkit-map-reset{position:absolute;left:0.5em;top:0.5em;z-index:1}";
  var HOVER_PIXELS = 8;

  function element(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function EmbedkitMap(root, data) {
    var points = data.points, count = points.id.length, self = this;
    var canvas = element("canvas"), legend = element("ul", "embedkit-map-legend");
    var tip = element("div", "embedkit-map-tip"), reset = element("button", "embedkit-map-reset", "Reset view");
    var hidden = {}, hovered = -1, pinned = false, view = null, drag = null;
    canvas.setAttribute("role", "img");
    canvas.setAttribute("aria-label", "Map of " + count + " items of " + data.title);
    root.appendChild(reset);
    root.appendChild(canvas);
    if (data.groups.length > 1 || data.color_by) root.appendChild(legend);
    root.appendChild(tip);

    var minX = Infinity, maxX = -Infinity, minY = Infinity, maxY = -Infinity;
    for (var i = 0; i < count; i++) {
      minX = Math.min(minX, points.x[i]); maxX = Math.max(maxX, points.x[i]);
      minY = Math.min(minY, points.y[i]); maxY = Math.max(maxY, points.y[i]);
    }

    function fit() {
      var width = canvas.clientWidth, height = canvas.clientHeight;
      var spanX = Math.max(maxX - minX, 1e-9), spanY = Math.max(maxY - minY, 1e-9);
      view = {scale: 0.9 * Math.min(width / spanX, height / spanY), cx: (minX + maxX) / 2, cy: (minY + maxY) / 2};
    }

    function toScreen(k) {
      return [canvas.clientWidth / 2 + (points.x[k] - view.cx) * view.scale,
              canvas.clientHeight / 2 - (points.y[k] - view.cy) * view.scale];
    }

    function radius() {
      return count > 5000 ? 2 : count > 500 ? 3 : 4.5;
    }

    function draw() {
      var ratio = window.devicePixelRatio || 1, width = canvas.clientWidth, height = canvas.clientHeight;
      if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
        canvas.width = Math.round(width * ratio);
        canvas.height = Math.round(height * ratio);
      }
      if (!view) fit();
      var context = canvas.getContext("2d"), r = radius(), drawn = 0;
      context.setTransform(ratio, 0, 0, ratio, 0, 0);
      context.clearRect(0, 0, width, height);
      for (var k = 0; k < count; k++) {
        var group = points.group[k];
        if (hidden[group]) continue;
        var at = toScreen(k);
        if (at[0] < -r || at[1] < -r || at[0] > width + r || at[1] > height + r) continue;
        context.fillStyle = data.groups[group].color;
        context.beginPath();
        context.arc(at[0], at[1], r, 0, 2 * Math.PI);
        context.fill();
        drawn++;
      }
      if (hovered >= 0) {
        var spot = toScreen(hovered);
        context.strokeStyle = "#000";
        context.lineWidth = 2;
        context.beginPath();
        context.arc(spot[0], spot[1], r + 3, 0, 2 * Math.PI);
        context.stroke();
      }
      canvas.setAttribute("data-drawn", drawn);  // how many points are in view (tests read it)
    }

    function nearest(x, y) {
      var best = -1, bestDistance = HOVER_PIXELS * HOVER_PIXELS;
      for (var k = 0; k < count; k++) {
        if (hidden[points.group[k]]) continue;
        var at = toScreen(k), dx = at[0] - x, dy = at[1] - y, distance = dx * dx + dy * dy;
        if (distance <= bestDistance) { best = k; bestDistance = distance; }
      }
      return best;
    }

    function link(k) {
      if (points.href) return points.href[k];  // each item's own URL (Datasette's row pages)
      return data.link ? data.link.split("{id}").join(encodeURIComponent(points.id[k])) : null;
    }

    function show(k) {
      hovered = k;
      tip.textContent = "";
      if (k < 0) {
        tip.style.display = "none";
        tip.classList.remove("embedkit-map-pinned");
        pinned = false;
      } else {
        var heading = element("b", "embedkit-map-title", points.title[k] || points.id[k]);
        tip.appendChild(heading);
        if (points.title[k]) tip.appendChild(element("small", "embedkit-map-id", points.id[k]));
        if (data.groups.length > 1 || data.color_by) {
          tip.appendChild(element("small", "embedkit-map-group", data.groups[points.group[k]].name));
        }
        if (points.text[k]) tip.appendChild(element("div", "embedkit-map-text", points.text[k]));
        var url = link(k);
        if (url && pinned) {
          var anchor = element("a", "", "Open");
          anchor.href = url;
          tip.appendChild(anchor);
        }
        var at = toScreen(k), left = canvas.offsetLeft + at[0] + 12, top = canvas.offsetTop + at[1] + 12;
        tip.style.display = "block";
        if (left + tip.offsetWidth > root.clientWidth) left = Math.max(0, left - tip.offsetWidth - 24);
        if (top + tip.offsetHeight > root.clientHeight) top = Math.max(0, top - tip.offsetHeight - 24);
        tip.style.left = left + "px";
        tip.style.top = top + "px";
      }
      draw();
    }

    function position(event) {
      var box = canvas.getBoundingClientRect();
      return [event.clientX - box.left, event.clientY - box.top];
    }

    canvas.addEventListener("mousemove", function (event) {
      var at = position(event);
      if (drag) {
        view.cx = drag.cx - (at[0] - drag.x) / view.scale;
        view.cy = drag.cy + (at[1] - drag.y) / view.scale;
        drag.moved = drag.moved || Math.abs(at[0] - drag.x) + Math.abs(at[1] - drag.y) > 3;
        draw();
        return;
      }
      if (pinned) return;
      var k = nearest(at[0], at[1]);
      if (k !== hovered) show(k);
    });
    canvas.addEventListener("mouseleave", function () {
      drag = null;
      if (!pinned) show(-1);
    });
    canvas.addEventListener("mousedown", function (event) {
      var at = position(event);
      drag = {x: at[0], y: at[1], cx: view.cx, cy: view.cy, moved: false};
      canvas.classList.add("embedkit-map-dragging");
    });
    canvas.addEventListener("mouseup", function (event) {
      var moved = drag && drag.moved;
      drag = null;
      canvas.classList.remove("embedkit-map-dragging");
      if (moved) return;
      var at = position(event), k = nearest(at[0], at[1]), url = k >= 0 ? link(k) : null;
      if (url && !event.shiftKey) {
        if (event.ctrlKey || event.metaKey) window.open(url, "_blank", "noopener");
        else window.location.href = url;
        return;
      }
      pinned = k >= 0 && !(pinned && k === hovered);
      tip.classList.toggle("embedkit-map-pinned", pinned);
      show(k);
    });
    canvas.addEventListener("wheel", function (event) {
      event.preventDefault();
      var at = position(event), factor = Math.exp(-event.deltaY * 0.0015);
      var x = view.cx + (at[0] - canvas.clientWidth / 2) / view.scale;
      var y = view.cy - (at[1] - canvas.clientHeight / 2) / view.scale;
      view.scale *= factor;
      view.cx = x - (at[0] - canvas.clientWidth / 2) / view.scale;
      view.cy = y + (at[1] - canvas.clientHeight / 2) / view.scale;
      if (hovered >= 0) show(hovered); else draw();
    }, {passive: false});
    canvas.addEventListener("dblclick", function () { fit(); show(-1); });
    reset.addEventListener("click", function () { fit(); show(-1); });

    data.groups.forEach(function (group, index) {
      var item = element("li"), swatch = element("span");
      swatch.style.background = group.color;
      item.appendChild(swatch);
      item.appendChild(document.createTextNode(group.name + " (" + group.count + ")"));
      item.title = "Show or hide";
      item.addEventListener("click", function () {
        hidden[index] = !hidden[index];
        item.classList.toggle("embedkit-map-hidden", hidden[index]);
        if (hovered >= 0 && hidden[points.group[hovered]]) show(-1); else draw();
      });
      legend.appendChild(item);
    });

    window.addEventListener("resize", draw);
    draw();

    // For scripts and tests: where an item is drawn, relative to the canvas.
    this.screenPosition = function (id) {
      var k = points.id.indexOf(id);
      return k < 0 ? null : toScreen(k);
    };
    this.canvas = canvas;
    self.data = data;
  }

  function start() {
    if (!document.getElementById("embedkit-map-style")) {
      var style = element("style", "", STYLE);
      style.id = "embedkit-map-style";
      document.head.appendChild(style);
    }
    var roots = document.querySelectorAll("[data-embedkit-map]");
    for (var i = 0; i < roots.length; i++) {
      if (roots[i].embedkitMap) continue;
      var source = document.getElementById(roots[i].getAttribute("data-embedkit-map"));
      roots[i].embedkitMap = new EmbedkitMap(roots[i], JSON.parse(source.textContent));
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
