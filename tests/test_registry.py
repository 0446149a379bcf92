import pytest

from tfkd.registry import Registry


def test_register_get_and_list_sorted():
    registry = Registry("widget")
    registry.register("b")(2)
    registry.register("a")(1)
    assert registry.get("a") == 1 and registry.get("b") == 2
    assert registry.names() == ["a", "b"]
    assert "a" in registry and "c" not in registry


def test_duplicate_name_is_an_error():
    registry = Registry("widget")
    registry.register("a")(1)
    with pytest.raises(ValueError, match="widget named 'a' is already registered"):
        registry.register("a")(2)
    assert registry.get("a") == 1


def test_unknown_name_lists_available():
    registry = Registry("widget")
    registry.register("x")(1)
    with pytest.raises(ValueError, match=r"Unknown widget 'y'. Available: \['x'\]"):
        registry.get("y")
