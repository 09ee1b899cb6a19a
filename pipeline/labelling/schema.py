"""What a Label Studio project asks for, read from its labeling config (XML): image labels
(`<Choices>`, single or multiple) or boxes (`<RectangleLabels>`) on one `<Image>`, and the
classes (their `<Choice>` / `<Label>` values). Anything else is refused in one line naming
the tag, since predictions for a config the backend does not understand would be wrong."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from pipeline.errors import DataError

LAYOUT_TAGS = {"View", "Header", "Style", "Text", "Filter", "Collapse", "Panel", "Relations",
               "Relation"}  # fmt: skip  # shape the page, ask for no label
MAX_CONFIG_BYTES = 256 * 1024


@dataclass(frozen=True)
class LabelingSchema:
    kind: str  # "choices" or "rectanglelabels": the result type predictions carry
    from_name: str  # the control's name
    to_name: str  # the <Image>'s name
    image_key: str  # the task data field holding the image ($image -> "image")
    classes: tuple[str, ...]
    multiple: bool  # choices: several may be chosen (choice="multiple")

    @property
    def boxes(self) -> bool:
        return self.kind == "rectanglelabels"


def read_schema(config: str) -> LabelingSchema:
    """The schema of a labeling config, or DataError naming what cannot be served."""
    if not isinstance(config, str) or not config.strip():
        raise DataError("labeling config: empty; set the project's labeling interface first")
    if len(config.encode()) > MAX_CONFIG_BYTES:
        raise DataError(f"labeling config: larger than {MAX_CONFIG_BYTES // 1024} KiB")
    if "<!DOCTYPE" in config or "<!ENTITY" in config:
        raise DataError("labeling config: holds a DOCTYPE or entities; Label Studio's have none")
    try:
        root = ET.fromstring(config)
    except ET.ParseError as exc:
        raise DataError(f"labeling config: not valid XML ({exc})") from None
    images, controls = [], []
    for element in root.iter():
        if element.tag == "Image":
            images.append(element)
        elif element.tag in ("Choices", "RectangleLabels"):
            controls.append(element)
        elif element.tag not in LAYOUT_TAGS | {"Choice", "Label"}:
            raise DataError(
                f"labeling config: tag <{element.tag}> is not served; midlevel serves one "
                "<Image> with <Choices> (image labels) or <RectangleLabels> (boxes)"
            )
    if len(images) != 1 or len(controls) != 1:
        raise DataError(
            f"labeling config: {len(images)} <Image> and {len(controls)} <Choices>/"
            "<RectangleLabels> tags; midlevel serves exactly one of each"
        )
    (image,), (control,) = images, controls
    value, to_name = image.get("value", ""), control.get("toName", "")
    if not value.startswith("$") or len(value) < 2:
        raise DataError(f'labeling config: <Image value={value!r}>; write value="$image"')
    if to_name != image.get("name"):
        raise DataError(
            f"labeling config: <{control.tag} toName={to_name!r}> is not the <Image name="
            f"{image.get('name')!r}>"
        )
    child = "Choice" if control.tag == "Choices" else "Label"
    classes = tuple(c.get("value", "") for c in control.iter(child))
    if not classes or "" in classes or len(set(classes)) != len(classes):
        raise DataError(
            f"labeling config: <{control.tag}> needs distinct non-empty <{child} value=...> "
            f"classes, has {list(classes)}"
        )
    return LabelingSchema(
        kind=control.tag.lower(),
        from_name=control.get("name", ""),
        to_name=to_name,
        image_key=value[1:],
        classes=classes,
        multiple=control.get("choice", "single") == "multiple",
    )
