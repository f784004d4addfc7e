"""Helpers for driving the console in Chromium: sign-in and accessibility checks."""

from __future__ import annotations

from typing import Any

A11Y_SCRIPT = """() => {
  const problems = [];
  const named = (el) => {
    if (el.getAttribute('aria-label') || el.getAttribute('aria-labelledby')) return true;
    if (el.id && document.querySelector(`label[for="${CSS.escape(el.id)}"]`)) return true;
    return !!el.closest('label');
  };
  for (const el of document.querySelectorAll('input, select, textarea')) {
    if (el.type === 'hidden') continue;
    if (!named(el)) problems.push(`unlabelled ${el.tagName.toLowerCase()} name=${el.name}`);
  }
  for (const el of document.querySelectorAll('button, a[href]')) {
    const text = (el.innerText || el.getAttribute('aria-label') || '').trim();
    if (!text) problems.push(`${el.tagName.toLowerCase()} without text`);
  }
  const h1 = document.querySelectorAll('h1').length;
  if (h1 !== 1) problems.push(`${h1} h1 elements`);
  let level = 0;
  for (const h of document.querySelectorAll('h1, h2, h3, h4, h5, h6')) {
    const next = Number(h.tagName[1]);
    if (next > level + 1) problems.push(`heading ${h.tagName} after h${level}: ${h.innerText}`);
    level = next;
  }
  if (!document.documentElement.lang) problems.push('no lang on <html>');
  if (!document.title) problems.push('no <title>');
  return problems;
}"""


def accessibility_problems(page: Any) -> list[str]:
    """Labels on every control, text on every button and link, one h1, headings in order."""
    return page.evaluate(A11Y_SCRIPT)


def assert_accessible(page: Any) -> None:
    problems = accessibility_problems(page)
    assert not problems, f"{page.url}: {problems}"


def tab_to(page: Any, selector: str, limit: int = 60) -> None:
    """Press Tab until ``selector`` has the focus: the control is reachable by keyboard."""
    target = page.locator(selector)
    for _ in range(limit):
        if target.evaluate("el => el === document.activeElement"):
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"{selector} is not reachable with Tab within {limit} presses")


def sign_in(page: Any, base_url: str, token: str) -> None:
    """Sign in with the keyboard alone: Tab to the token field, type, Enter."""
    page.goto(f"{base_url}/console/")
    assert "/console/signin" in page.url
    tab_to(page, "#token")
    page.keyboard.type(token)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base_url}/console/")
