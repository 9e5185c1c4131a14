// The review page's only script: word-box toggle, and pages filled in as they come near.
(function () {
  "use strict";
  var toggle = document.getElementById("boxes-toggle");
  function apply() { document.body.classList.toggle("no-boxes", !toggle.checked); }
  toggle.addEventListener("change", apply);
  apply();

  // A page's picture waits in a <template> and its word boxes in a JSON block until needed.
  function fill(frame) {
    if (frame.dataset.ready) { return; }
    frame.dataset.ready = "1";
    var tpl = frame.querySelector("template");
    if (tpl) { frame.appendChild(tpl.content.cloneNode(true)); }
    var block = document.getElementById("w-" + frame.dataset.page);
    if (!block) { return; }
    var words = JSON.parse(block.textContent);
    var layer = document.createElement("div");
    layer.className = "boxes";
    layer.setAttribute("aria-hidden", "true");
    for (var i = 0; i < words.length; i++) {
      var w = words[i];
      if (!w) { continue; }
      var b = document.createElement("i");
      b.className = "box box-" + w[4];
      b.dataset.i = i;
      b.title = w[5];
      b.style.left = w[0] + "%";
      b.style.top = w[1] + "%";
      b.style.width = w[2] + "%";
      b.style.height = w[3] + "%";
      layer.appendChild(b);
    }
    frame.appendChild(layer);
    frame.dataset.ready = "2";
  }

  var frames = document.querySelectorAll(".frame[data-page]");
  if ("IntersectionObserver" in window) {
    var io = new IntersectionObserver(function (entries) {
      entries.forEach(function (entry) {
        if (entry.isIntersecting) { fill(entry.target); io.unobserve(entry.target); }
      });
    }, { rootMargin: "1500px 0px" });
    frames.forEach(function (f) { io.observe(f); });
  } else {
    frames.forEach(fill);
  }
  // A highlight's details open to its left when there is no room for them on its right.
  function placeTip(ev) {
    var mark = ev.target.closest ? ev.target.closest("mark.ent") : null;
    if (!mark) { return; }
    var room = document.documentElement.clientWidth - mark.getBoundingClientRect().left;
    mark.classList.toggle("tip-left", room < 430);
  }
  document.addEventListener("focusin", placeTip);
  document.addEventListener("mouseover", placeTip);

  // A link to a page or a highlight fills that page first, so the jump lands on its picture.
  window.addEventListener("hashchange", function () {
    var target = document.getElementById(location.hash.slice(1));
    var page = target && target.closest(".page");
    var frame = page && page.querySelector(".frame[data-page]");
    if (frame) { fill(frame); }
  });
}());
