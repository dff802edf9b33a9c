"""`Embedding`: columns that nothing needs go."""

import keras

from keras_l0.shrink.fold import numpy
from keras_l0.shrink.fold import rebuild
from keras_l0.shrink.steps.base import Step
from keras_l0.shrink.steps.base import register
from keras_l0.shrink.steps.base import single_input
from keras_l0.shrink.views import SlimLayer


@register(keras.layers.Embedding)
class EmbeddingStep(Step):
    @classmethod
    def accepts(cls, layer, node):
        if not single_input(node):
            return "shrink supports one input"
        if getattr(layer, "quantization_mode", None) is not None or getattr(
            layer, "lora_enabled", False
        ):
            return "it is quantized or has LoRA weights"
        return None

    def needs(self):
        self.plan.require(self.data)

    def adjust(self):
        return self.at_least_one(
            self.outputs[0],
            f"Nothing reads layer '{self.layer.name}': its slim version keeps "
            "one column.",
        )

    def plan_views(self):
        self.cols = self.plan.kept_of(self.outputs[0])
        self.same = len(self.cols) == self.layer.output_dim
        if self.same:
            self.slim.append(SlimLayer("clone", self.layer))
        else:
            self.slim.append(
                SlimLayer(
                    "embedding",
                    self.layer,
                    input_dim=self.layer.input_dim,
                    units=len(self.cols),
                )
            )
        return [self.plan.view(self.outputs[0], source=self.layer.name)]

    def build(self):
        if self.same:
            return self.reuse()
        new = rebuild(self.layer, output_dim=len(self.cols))
        outputs = self.call(new)
        new.set_weights([numpy(self.layer.embeddings)[:, self.cols]])
        return outputs
