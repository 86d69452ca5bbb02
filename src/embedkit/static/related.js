/* embedkit related.js: a "Related" list of links, read from `embedkit export-related` output.
 *
 *   <div data-embedkit-related="post-1"></div>
 *   <script src="/related.js" defer></script>
 *
 * Attributes of the element:
 *   data-embedkit-related  the item's id (required)
 *   data-src    directory of per-item files (default "/related/"; fetches DIR/<name>.json,
 *               <name> as embedkit.related.file_name computes it), or the URL of a combined
 *               file ending in ".json" (`export-related --combined`), fetched once per page
 *   data-title  heading text (default "Related"; "" for no heading)
 *   data-limit  at most this many links (default: all)
 *   data-url    URL template for neighbours without a "url" field, e.g. "/posts/{id}/";
 *               neighbours with neither are skipped. Only http(s) and relative links are kept.
 *
 * Renders <nav class="embedkit-related"><h2>Related</h2><ul><li><a href=...>title</a>...</ul></nav>
 * inside the element; on any error (missing file, bad JSON, no links) the element is left empty.
 * File names of ids longer than 200 characters need crypto.subtle (HTTPS or localhost).
 * When done, the element gets a bubbling "embedkit-related" event (detail.rendered: true/false).
 * window.embedkitRelated = {fileName(id) -> Promise<name>, render(element) -> Promise<boolean>}
 * re-renders an element, e.g. one added to the page later.
 */
(() => {
  "use strict";
  const RESERVED = new Set(["con", "prn", "aux", "nul", "index"]); // devices; export's index.json
  for (let i = 0; i < 10; i++) RESERVED.add("com" + i).add("lpt" + i);
  const hex = (byte) => byte.toString(16).toUpperCase().padStart(2, "0");
  const utf8 = (text) => new TextEncoder().encode(text);
  const linkable = (href) => { // http(s) and relative URLs: no javascript: or data: links
    try { return /^https?:$/.test(new URL(href, document.baseURI).protocol); } catch (e) { return false; }
  };
  const cache = new Map(); // URL -> Promise of its JSON
  let headings = 0;

  async function fileName(id) {
    let name = "";
    for (const char of id) { // code points, as Python iterates a str
      name += /^[a-z0-9_-]$/.test(char) ? char : Array.from(utf8(char), (b) => "~" + hex(b)).join("");
    }
    if (name.length > 200) {
      if (!(self.crypto && crypto.subtle)) throw new Error("crypto.subtle is unavailable");
      const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", utf8(id)));
      return "~~" + Array.from(digest, (b) => hex(b).toLowerCase()).join("").slice(0, 40);
    }
    return RESERVED.has(name) ? "~" + hex(name.charCodeAt(0)) + name.slice(1) : name;
  }

  function load(url) {
    if (!cache.has(url)) {
      const json = fetch(url).then((response) => {
        if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
        return response.json();
      });
      json.catch(() => cache.delete(url)); // a later render may try again
      cache.set(url, json);
    }
    return cache.get(url);
  }

  async function neighbours(id, src) {
    const url = new URL(src, document.baseURI);
    if (url.pathname.endsWith(".json")) {
      const items = ((await load(url.href)) || {}).items || {};
      return Object.prototype.hasOwnProperty.call(items, id) ? items[id] : null;
    }
    if (!url.pathname.endsWith("/")) url.pathname += "/";
    url.pathname += (await fileName(id)) + ".json";
    return ((await load(url.href)) || {}).related;
  }

  function links(list, template, limit) {
    const items = [];
    for (const n of Array.isArray(list) ? list : []) {
      if (items.length >= limit) break;
      if (!n || typeof n !== "object" || n.id == null) continue;
      const id = String(n.id);
      const href = n.url ? String(n.url) : template ? template.replace(/\{id\}/g, encodeURIComponent(id)) : "";
      if (!href || !linkable(href)) continue;
      const li = document.createElement("li");
      const a = li.appendChild(document.createElement("a"));
      a.href = href;
      a.textContent = n.title == null || n.title === "" ? id : String(n.title);
      items.push(li);
    }
    return items;
  }

  async function render(element) {
    const data = element.dataset;
    let nav = null;
    try {
      const limit = parseInt(data.limit, 10);
      const list = await neighbours(data.embedkitRelated, data.src || "/related/");
      const items = links(list, data.url, limit > 0 ? limit : Infinity);
      if (items.length) {
        nav = document.createElement("nav");
        nav.className = "embedkit-related";
        const title = data.title == null ? "Related" : data.title;
        if (title) {
          const h2 = nav.appendChild(document.createElement("h2"));
          do h2.id = "embedkit-related-" + ++headings; while (document.getElementById(h2.id));
          h2.textContent = title;
          nav.setAttribute("aria-labelledby", h2.id);
        } else {
          nav.setAttribute("aria-label", "Related");
        }
        nav.appendChild(document.createElement("ul")).append(...items);
      }
    } catch (error) {
      console.debug("embedkit related:", error);
    }
    element.replaceChildren(...(nav ? [nav] : []));
    element.dispatchEvent(new CustomEvent("embedkit-related", { bubbles: true, detail: { rendered: !!nav } }));
    return !!nav;
  }

  const start = () => document.querySelectorAll("[data-embedkit-related]").forEach(render);
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
  window.embedkitRelated = { fileName, render };
})();
