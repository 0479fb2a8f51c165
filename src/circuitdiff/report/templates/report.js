/* Records page errors and figure sizes in attributes of <html>, so that a headless
   browser's --dump-dom shows whether the report loaded cleanly. No network, no globals
   beyond this closure. */
(function () {
  var root = document.documentElement, errors = [];
  function record(message) {
    errors.push(String(message));
    root.setAttribute("data-errors", JSON.stringify(errors));
  }
  root.setAttribute("data-errors", "[]");
  window.addEventListener("error", function (e) {
    var t = e.target;
    record(e.message || ("failed to load " + ((t && (t.src || t.href)) || "a resource")));
  }, true);
  window.addEventListener("unhandledrejection", function (e) { record("unhandled rejection: " + e.reason); });
  document.addEventListener("securitypolicyviolation", function (e) { record("blocked by CSP: " + e.blockedURI); });
  var consoleError = console.error;
  console.error = function () {
    record(Array.prototype.join.call(arguments, " "));
    return consoleError.apply(console, arguments);
  };
  window.addEventListener("load", function () {
    var figures = document.querySelectorAll("figure[data-figure]");
    Array.prototype.forEach.call(figures, function (f) {
      var el = f.querySelector("svg, img"), box = el ? el.getBoundingClientRect() : { width: 0, height: 0 };
      var ok = el && (el.tagName.toLowerCase() !== "img" || el.naturalWidth > 0);
      f.setAttribute("data-width", ok ? Math.round(box.width) : 0);
      f.setAttribute("data-height", ok ? Math.round(box.height) : 0);
    });
    root.setAttribute("data-figures", String(figures.length));
    root.setAttribute("data-ready", "1");
  });
})();
