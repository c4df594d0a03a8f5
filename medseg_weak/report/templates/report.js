// Sorting of every table and filtering/sorting of the gallery; no library, no network.
(function () {
  "use strict";
  function key(td) {
    var k = td.getAttribute("data-key");
    var n = parseFloat(k);
    return k !== "" && !isNaN(n) && isFinite(k) ? n : k;
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    var heads = table.querySelectorAll("th");
    heads.forEach(function (th, col) {
      th.addEventListener("click", function () {
        var asc = !th.classList.contains("asc");
        heads.forEach(function (h) { h.classList.remove("asc", "desc"); });
        th.classList.add(asc ? "asc" : "desc");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = key(a.cells[col]), y = key(b.cells[col]);
          if (x === y) { return 0; }
          if (x === "") { return 1; }  // empty cells last whatever the direction
          if (y === "") { return -1; }
          var less = typeof x === typeof y ? x < y : String(x) < String(y);
          return (less ? -1 : 1) * (asc ? 1 : -1);
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });
  var gallery = document.getElementById("gallery");
  if (!gallery) { return; }
  var grid = gallery.querySelector(".grid");
  var selects = gallery.querySelectorAll("select[data-filter]");
  var order = document.getElementById("gallery-sort");
  function update() {
    var shown = 0;
    var tiles = Array.prototype.slice.call(grid.children);
    tiles.forEach(function (tile) {
      var keep = true;
      selects.forEach(function (s) {
        if (s.value && tile.getAttribute("data-" + s.getAttribute("data-filter")) !== s.value) { keep = false; }
      });
      tile.classList.toggle("hidden", !keep);
      if (keep) { shown += 1; }
    });
    var sign = order.value === "desc" ? -1 : 1;
    tiles.sort(function (a, b) {
      var x = parseFloat(a.getAttribute("data-dice")), y = parseFloat(b.getAttribute("data-dice"));
      x = isNaN(x) ? -1 : x; y = isNaN(y) ? -1 : y;
      return sign * (x - y);
    });
    tiles.forEach(function (t) { grid.appendChild(t); });
    document.getElementById("gallery-count").textContent = shown + " of " + tiles.length + " shown";
  }
  selects.forEach(function (s) { s.addEventListener("change", update); });
  order.addEventListener("change", update);
  update();
})();
