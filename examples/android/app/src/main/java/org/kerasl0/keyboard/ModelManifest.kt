package org.kerasl0.keyboard

import org.json.JSONArray
import org.json.JSONObject

/**
 * The keras-l0 model manifest (format "keras-l0-manifest", version 1), written
 * beside the .tflite by `keras_l0.manifest`. Every name, shape and dtype the app
 * uses comes from here, none is a constant in the code.
 */
data class TensorSpec(
    val name: String,
    val role: String,
    val shape: IntArray,
    val dtype: String,
) {
    /** Number of elements: the product of the shape. */
    val size: Int get() = shape.fold(1) { a, b -> a * b }
}

data class StatePair(
    val input: String,
    val output: String,
    val layer: String,
    val kind: String?,
    val shape: IntArray,
    val dtype: String,
) {
    val size: Int get() = shape.fold(1) { a, b -> a * b }
}

data class LanguageModelSpec(
    val vocabularyFile: String,
    val vocabularySize: Int?,
    val tokenInput: String,
    val logitsOutput: String,
    /** role -> token id, e.g. "end_of_sentence" -> 0, "unknown" -> 1. */
    val specialTokens: Map<String, Int>,
)

data class ModelManifest(
    val modelFile: String,
    val modelBytes: Long,
    val signature: String,
    val sequenceMode: String,
    val quantization: String,
    val inputs: List<TensorSpec>,
    val outputs: List<TensorSpec>,
    val states: List<StatePair>,
    val languageModel: LanguageModelSpec,
) {
    fun input(name: String): TensorSpec =
        inputs.firstOrNull { it.name == name } ?: error("manifest: no input '$name'")

    fun output(name: String): TensorSpec =
        outputs.firstOrNull { it.name == name } ?: error("manifest: no output '$name'")

    companion object {
        const val FORMAT = "keras-l0-manifest"
        const val VERSION = 1

        fun parse(text: String): ModelManifest {
            val json = JSONObject(text)
            require(json.optString("format") == FORMAT) { "not a $FORMAT" }
            require(json.optInt("version") == VERSION) {
                "manifest version ${json.opt("version")}, this app reads $VERSION"
            }
            val sequenceMode = json.getString("sequence_mode")
            require(sequenceMode == "streaming") {
                "the keyboard needs a streaming export (keras-l0-shrink --streaming), got $sequenceMode"
            }
            val lm = json.optJSONObject("language_model")
                ?: error("the manifest has no language_model (vocabulary, special tokens)")
            val specials = lm.getJSONObject("special_tokens")
            val specialIds = specials.keys().asSequence().associateWith { role ->
                val entry = specials.getJSONObject(role)
                require(!entry.isNull("id")) { "special token '$role' has no id" }
                entry.getInt("id")
            }
            val model = json.getJSONObject("model")
            return ModelManifest(
                modelFile = model.getString("file"),
                modelBytes = model.getLong("bytes"),
                signature = json.getString("signature"),
                sequenceMode = sequenceMode,
                quantization = json.getString("quantization"),
                inputs = tensors(json.getJSONArray("inputs")),
                outputs = tensors(json.getJSONArray("outputs")),
                states = json.getJSONArray("states").objects().map {
                    StatePair(
                        input = it.getString("input"),
                        output = it.getString("output"),
                        layer = it.getString("layer"),
                        kind = if (it.isNull("kind")) null else it.getString("kind"),
                        shape = it.getJSONArray("shape").ints(),
                        dtype = it.getString("dtype"),
                    )
                },
                languageModel = LanguageModelSpec(
                    vocabularyFile = lm.getString("vocabulary_file"),
                    vocabularySize = if (lm.isNull("vocabulary_size")) null else lm.getInt("vocabulary_size"),
                    tokenInput = lm.getString("token_input"),
                    logitsOutput = lm.getString("logits_output"),
                    specialTokens = specialIds,
                ),
            )
        }

        private fun tensors(array: JSONArray) = array.objects().map {
            TensorSpec(
                name = it.getString("name"),
                role = it.getString("role"),
                shape = it.getJSONArray("shape").ints(),
                dtype = it.getString("dtype"),
            )
        }

        private fun JSONArray.objects(): List<JSONObject> = (0 until length()).map { getJSONObject(it) }

        private fun JSONArray.ints(): IntArray = IntArray(length()) { getInt(it) }
    }
}
