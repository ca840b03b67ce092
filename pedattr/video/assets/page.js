// index.html's behaviour: cards of the tracks, filtered by PedattrQuery (query.js), sorted by
// time or confidence; a click opens the track's crops over time with their ALM boxes.
"use strict";
(function () {
  var data = JSON.parse(document.getElementById("pedattr-data").textContent);
  var tracks = data.tracks;
  var $ = function (id) { return document.getElementById(id); };
  var main = $("tracks");
  var cards = [];
  var timer = null;

  function el(tag, attributes, text) {
    var node = document.createElement(tag);
    Object.keys(attributes || {}).forEach(function (k) { node.setAttribute(k, attributes[k]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function seconds(t) { return (Math.round(t * 10) / 10).toFixed(1); }
  function when(track) { return seconds(track.first_time) + "–" + seconds(track.last_time) + " s"; }

  // The best crop without drawing (from the gallery), else the thumbnail with its boxes.
  function bestImage(track) {
    var gallery = track.gallery || [];
    var best = gallery.filter(function (g) { return g.frame === track.best_frame; })[0];
    return best ? best.image : track.thumbnail;
  }

  function buildCard(track) {
    var card = el("div", { "class": "card", "data-id": String(track.id), tabindex: "0" });
    var image = bestImage(track);
    card.appendChild(image
      ? el("img", { "class": "crop", src: image, loading: "lazy", alt: "track " + track.id })
      : el("div", { "class": "crop none" }, "no crop"));
    var meta = el("div", { "class": "meta" });
    var head = el("div", { "class": "head" });
    head.appendChild(el("span", {}, "#" + track.id));
    head.appendChild(el("span", { "class": "when" }, when(track)));
    meta.appendChild(head);
    var chips = el("div", { "class": "chips" });
    (track.attributes || []).forEach(function (name) {
      var p = track.probabilities[name];
      chips.appendChild(el("span", { "class": "chip", "data-name": name, title: name + " " + p.toFixed(2) }, name));
    });
    meta.appendChild(chips);
    meta.appendChild(el("div", { "class": "confidence" }));
    card.appendChild(meta);
    card.addEventListener("click", function () { openDetail(track); });
    card.addEventListener("keydown", function (e) { if (e.key === "Enter") openDetail(track); });
    return card;
  }

  function readQuery() {
    var text = $("query").value;
    if (!text.trim()) return { query: null };
    try {
      return { query: PedattrQuery.parse(text, data.names.length ? data.names : null) };
    } catch (err) {
      if (err instanceof PedattrQuery.QueryError) return { error: err };
      throw err;
    }
  }

  // Filter and sort the cards; the visible ones are exactly the matching tracks, in order.
  function update() {
    var parsed = readQuery();
    var input = $("query");
    input.classList.toggle("invalid", Boolean(parsed.error));
    $("error").textContent = parsed.error ? parsed.error.message : "";
    var query = parsed.error ? null : parsed.query;
    var minProb = $("use-cutoff").checked ? Number($("cutoff").value) : null;
    var queried = query ? PedattrQuery.namesIn(query) : [];
    var shown = [];
    cards.forEach(function (entry) {
      var value = PedattrQuery.matches(query, entry.track, minProb);
      entry.confidence = value;
      entry.card.hidden = value === null;
      if (value !== null) shown.push(entry);
      entry.card.querySelectorAll(".chip").forEach(function (chip) {
        chip.classList.toggle("hit", queried.indexOf(chip.dataset.name) >= 0);
      });
      entry.card.querySelector(".confidence").textContent = query && value !== null
        ? queried.map(function (n) { return n + " " + entry.track.probabilities[n].toFixed(2); }).join(" · ")
        : "";
    });
    var order = cards.slice();
    if ($("sort").value === "confidence") {
      order.sort(function (a, b) {
        var x = a.confidence === null ? -1 : a.confidence;
        var y = b.confidence === null ? -1 : b.confidence;
        return y - x;  // stable: ties keep time order
      });
    }
    order.forEach(function (entry) { main.appendChild(entry.card); });
    // What the cards now show, for tests and scripts: [query, cut-off or null, sort].
    $("count").dataset.state = JSON.stringify([input.value, minProb, $("sort").value]);
    $("count").textContent = shown.length + " of " + tracks.length + " tracks" +
      (parsed.error ? " (the query is not valid: every track shown)" : "");
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(update, 60);
  }

  function svgBoxes(entry, selected) {
    var ns = "http://www.w3.org/2000/svg";
    var region = entry.region;
    var svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", "0 0 " + (region[2] - region[0]) + " " + (region[3] - region[1]));
    svg.setAttribute("preserveAspectRatio", "none");
    Object.keys(entry.boxes || {}).forEach(function (name) {
      if (selected && selected !== name) return;
      var levels = entry.boxes[name];
      Object.keys(levels).forEach(function (level) {
        var b = levels[level];
        var rect = document.createElementNS(ns, "rect");
        rect.setAttribute("x", b[0] - region[0]);
        rect.setAttribute("y", b[1] - region[1]);
        rect.setAttribute("width", Math.max(1, b[2] - b[0]));
        rect.setAttribute("height", Math.max(1, b[3] - b[1]));
        rect.setAttribute("stroke", data.levels[level] || "#ff0");
        var title = document.createElementNS(ns, "title");
        title.textContent = name + " (" + level + ")";
        rect.appendChild(title);
        svg.appendChild(rect);
      });
    });
    return svg;
  }

  function drawGallery(track, selected) {
    var gallery = $("gallery");
    gallery.textContent = "";
    (track.gallery || []).forEach(function (entry) {
      var figure = el("figure");
      var shot = el("div", { "class": "shot" });
      shot.appendChild(el("img", { src: entry.image, alt: "frame " + entry.frame }));
      shot.appendChild(svgBoxes(entry, selected));
      figure.appendChild(shot);
      figure.appendChild(el("figcaption", {}, seconds(entry.time) + " s · frame " + entry.frame +
        (entry.frame === track.best_frame ? " · best" : "")));
      gallery.appendChild(figure);
    });
    if (!(track.gallery || []).length) gallery.appendChild(el("p", {}, "no crops kept for this track"));
  }

  function openDetail(track) {
    var selected = null;
    $("detail-title").textContent = "Track #" + track.id;
    $("detail-when").textContent = "seen " + when(track) + " (frames " + track.first_frame + "–" +
      track.last_frame + "), attributes from " + track.frames_used + " crops. Boxes: ";
    Object.keys(data.levels).forEach(function (level) {
      var key = el("span", { "class": "legend" });
      var swatch = el("span");
      swatch.style.background = data.levels[level];
      key.appendChild(swatch);
      key.appendChild(document.createTextNode(level));
      $("detail-when").appendChild(key);
    });
    var table = $("detail-attributes");
    table.textContent = "";
    var names = Object.keys(track.probabilities || {});
    names.sort(function (a, b) { return track.probabilities[b] - track.probabilities[a]; });
    names.forEach(function (name) {
      var p = track.probabilities[name];
      var yes = (track.attributes || []).indexOf(name) >= 0;
      var row = el("tr", { "class": yes ? "yes" : "", title: yes ? "click: only this attribute's boxes" : "" });
      row.appendChild(el("td", {}, name));
      var cell = el("td");
      var bar = el("span", { "class": "bar" });
      bar.style.width = Math.round(p * 100) + "px";
      cell.appendChild(bar);
      row.appendChild(cell);
      row.appendChild(el("td", {}, p.toFixed(2)));
      row.addEventListener("click", function () {
        selected = selected === name ? null : name;
        table.querySelectorAll("tr").forEach(function (r) { r.classList.remove("selected"); });
        if (selected) row.classList.add("selected");
        drawGallery(track, selected);
      });
      table.appendChild(row);
    });
    var thumbnail = $("detail-thumbnail");
    thumbnail.hidden = !track.thumbnail;
    if (track.thumbnail) thumbnail.querySelector("img").src = track.thumbnail;
    drawGallery(track, null);
    $("detail").hidden = false;
  }

  function closeDetail() { $("detail").hidden = true; }

  function init() {
    var summary = data.summary || {};
    var parts = [tracks.length + " tracks"];
    if (summary.frames !== undefined) parts.push(summary.frames + " frames");
    if (summary.checkpoint) parts.push("checkpoint " + summary.checkpoint);
    if (summary.complete === false) parts.push("stopped: " + summary.stopped);
    $("summary").textContent = parts.join(" · ");
    $("names").textContent = "Attributes: " + (data.names.length ? data.names.map(PedattrQuery.quote).join(", ") : "none");
    var fragment = document.createDocumentFragment();
    tracks.slice().sort(function (a, b) { return a.first_time - b.first_time || a.id - b.id; })
      .forEach(function (track) {
        var card = buildCard(track);
        cards.push({ track: track, card: card, confidence: null });
        fragment.appendChild(card);
      });
    main.appendChild(fragment);
    $("query").addEventListener("input", schedule);
    $("use-cutoff").addEventListener("change", function () {
      $("cutoff").disabled = !$("use-cutoff").checked;
      update();
    });
    $("cutoff").addEventListener("input", function () {
      $("cutoff-value").textContent = Number($("cutoff").value).toFixed(2);
      schedule();
    });
    $("sort").addEventListener("change", update);
    $("close").addEventListener("click", closeDetail);
    $("detail").addEventListener("click", function (e) { if (e.target === $("detail")) closeDetail(); });
    document.addEventListener("keydown", function (e) { if (e.key === "Escape") closeDetail(); });
    var hash = decodeURIComponent(location.hash.slice(1));
    if (hash) $("query").value = hash;  // index.html#Female%20%26%20Hat opens filtered
    update();
    document.body.dataset.ready = "1";
  }

  init();
})();
