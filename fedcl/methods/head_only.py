"""Head-only (linear probe): the input is not transformed, so backbone features are cached."""

from __future__ import annotations

from fedcl.methods.base import METHODS, Method, freeze_transform, head_group


@METHODS.register("head_only")
class HeadOnly(Method):
    name = "head_only"
    uses_transform = False

    def configure(self, model, settings):
        freeze_transform(model)
        return head_group(model, settings)
