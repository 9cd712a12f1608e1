"""``modfetch tui``: a curses dashboard over the state DB (``model`` is the pure logic, ``screen`` draws)."""
