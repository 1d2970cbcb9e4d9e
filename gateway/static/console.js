/* LinkLoop console: copy buttons, a confirm before retiring, the entry form's kind. */
(function () {
  function copied(button, ok) {
    var done = button.getAttribute('data-done') || '已复制';
    button.textContent = ok ? done : '请长按文字手动复制';
    button.classList.toggle('done', ok);
  }
  function copy(button) {
    var text = button.getAttribute('data-copy');
    function fallback() {
      var area = document.createElement('textarea');
      area.value = text; area.setAttribute('readonly', '');
      area.style.position = 'fixed'; area.style.opacity = '0';
      document.body.appendChild(area); area.select();
      var ok = false;
      try { ok = document.execCommand('copy'); } catch (e) { ok = false; }
      document.body.removeChild(area); copied(button, ok);
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () { copied(button, true); }, fallback);
    } else { fallback(); }
  }
  document.addEventListener('click', function (event) {
    var button = event.target.closest('[data-copy]');
    if (button) { event.preventDefault(); copy(button); }
  });
  document.addEventListener('submit', function (event) {
    var question = event.target.getAttribute('data-confirm');
    if (question && !window.confirm(question)) { event.preventDefault(); }
  });
  function showKind() {
    var chosen = document.querySelector('input[name="kind"]:checked');
    document.querySelectorAll('[data-kind]').forEach(function (part) {
      part.hidden = !!chosen && part.getAttribute('data-kind').split(' ').indexOf(chosen.value) < 0;
    });
  }
  document.addEventListener('change', function (event) {
    if (event.target.name === 'kind') { showKind(); }
  });
  document.addEventListener('DOMContentLoaded', showKind);
})();
