"""What a registration form and a card number must look like before they go into a request."""
from __future__ import annotations

def luhn_ok(pan: str) -> bool:
    """ISO/IEC 7812 check digit."""
    if not (pan.isascii() and pan.isdigit() and 12 <= len(pan) <= 19):
        return False
    total = 0
    for i, ch in enumerate(reversed(pan)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def fill_form(form_data, values: dict) -> tuple[list, int | None, str | None]:
    """RegFormItems for the CA's regTemplate from our values; (items, regFormID, problem)."""
    template = form_data["reg_template"]
    if template.native is None:
        return [], None, None
    items = []
    for field in template["reg_field_seq"]:
        name, length = field["field_name"].native, field["field_len"].native
        value = values.get(name)
        if value in (None, ""):
            if field["field_required"].native:
                return [], None, f"registration form needs {name!r}"
            continue
        value = str(value)
        if len(value) > length:
            return [], None, f"{name!r} is longer than {length} characters"
        items.append({"field_name": name, "field_value": value})
    return items, template["reg_form_id"].native, None
