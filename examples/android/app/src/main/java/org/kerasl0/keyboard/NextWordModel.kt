package org.kerasl0.keyboard

import android.content.Context
import android.content.res.AssetManager
import android.os.SystemClock
import org.tensorflow.lite.DataType
import org.tensorflow.lite.Interpreter
import java.io.FileInputStream
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.nio.FloatBuffer
import java.nio.IntBuffer
import java.nio.MappedByteBuffer
import java.nio.channels.FileChannel
import kotlin.math.exp

/** A suggested next word. */
data class Suggestion(val word: String, val id: Int, val probability: Float)

/**
 * A keras-l0 streaming language model: one token per call of the "step"
 * signature, the recurrent states carried from call to call in direct
 * buffers sized from the manifest's shapes.
 *
 * Not thread-safe: call it from one thread (MainActivity uses one
 * single-threaded dispatcher).
 */
class NextWordModel private constructor(
    val manifest: ModelManifest,
    val vocabulary: List<String>,
    private val interpreter: Interpreter,
) : AutoCloseable {
    private val lm = manifest.languageModel
    private val tokenSpec = manifest.input(lm.tokenInput)
    private val logitsSpec = manifest.output(lm.logitsOutput)
    private val index: Map<String, Int> = vocabulary.withIndex().associate { (i, w) -> w to i }
    private val specialIds: Set<Int> = lm.specialTokens.values.toSet()
    val endOfSentence: Int = lm.specialTokens["end_of_sentence"]
        ?: error("the manifest names no end_of_sentence token")
    private val unknown: Int = lm.specialTokens["unknown"] ?: endOfSentence

    // One input buffer per state and one output buffer per state: after a
    // call the outputs are copied into the inputs (the next call's states).
    private val tokenBuffer: IntBuffer = directInts(tokenSpec.size)
    private val stateIn: Map<String, FloatBuffer> = manifest.states.associate { it.input to directFloats(it.size) }
    private val stateOut: Map<String, FloatBuffer> = manifest.states.associate { it.output to directFloats(it.size) }
    private val logitsBuffer: FloatBuffer = directFloats(logitsSpec.size)
    private val inputs: Map<String, Any>
    private val outputs: Map<String, Any>

    /** Token ids fed since the last reset. */
    val fed = mutableListOf<Int>()
    /** The logits after the last call (the vocabulary's last-axis slice). */
    val logits = FloatArray(vocabulary.size)

    init {
        checkAgainstFile()
        inputs = buildMap {
            put(tokenSpec.name, tokenBuffer)
            putAll(stateIn)
        }
        outputs = buildMap {
            put(logitsSpec.name, logitsBuffer)
            putAll(stateOut)
        }
        reset()
    }

    /**
     * The manifest must describe the file that was loaded: same signature,
     * same input and output names, shapes and types (a cheap in-app twin of
     * `keras_l0.manifest.check`).
     */
    private fun checkAgainstFile() {
        val key = manifest.signature
        require(key in interpreter.signatureKeys) {
            "the .tflite has no signature '$key' (it has ${interpreter.signatureKeys.toList()})"
        }
        val fileInputs = interpreter.getSignatureInputs(key).toSet()
        val fileOutputs = interpreter.getSignatureOutputs(key).toSet()
        require(fileInputs == manifest.inputs.map { it.name }.toSet()) {
            "inputs: manifest ${manifest.inputs.map { it.name }}, file $fileInputs"
        }
        require(fileOutputs == manifest.outputs.map { it.name }.toSet()) {
            "outputs: manifest ${manifest.outputs.map { it.name }}, file $fileOutputs"
        }
        for (spec in manifest.inputs) {
            val tensor = interpreter.getInputTensorFromSignature(spec.name, key)
            require(tensor.shape().contentEquals(spec.shape)) {
                "input ${spec.name}: shape ${tensor.shape().toList()} in the file, ${spec.shape.toList()} in the manifest"
            }
            require(tensor.dataType() == dataType(spec.dtype)) {
                "input ${spec.name}: ${tensor.dataType()} in the file, ${spec.dtype} in the manifest"
            }
        }
        for (spec in manifest.outputs) {
            val tensor = interpreter.getOutputTensorFromSignature(spec.name, key)
            require(tensor.shape().contentEquals(spec.shape)) {
                "output ${spec.name}: shape ${tensor.shape().toList()} in the file, ${spec.shape.toList()} in the manifest"
            }
        }
        require(tokenSpec.dtype == "int32") { "token input ${tokenSpec.name} is ${tokenSpec.dtype}, expected int32" }
        require(manifest.states.all { it.dtype == "float32" }) { "states must be float32" }
        require(logitsSpec.size % vocabulary.size == 0 && logitsSpec.shape.last() == vocabulary.size) {
            "logits ${logitsSpec.shape.toList()} do not fit a ${vocabulary.size}-word vocabulary"
        }
    }

    /** Zero states: the start of a new sentence. */
    fun reset() {
        for (buffer in stateIn.values) {
            buffer.clear()
            while (buffer.hasRemaining()) buffer.put(0f)
            buffer.rewind()
        }
        fed.clear()
        logits.fill(0f)
    }

    /** Feeds one token; returns the milliseconds the call took. */
    fun step(id: Int): Double {
        val start = SystemClock.elapsedRealtimeNanos()
        tokenBuffer.clear()
        for (i in 0 until tokenSpec.size) tokenBuffer.put(if (i == tokenSpec.size - 1) id else 0)
        tokenBuffer.rewind()
        for (buffer in stateIn.values) buffer.rewind()
        for (buffer in stateOut.values) buffer.clear()
        logitsBuffer.clear()
        interpreter.runSignature(inputs, outputs, manifest.signature)
        // The new states become the next call's inputs.
        for (pair in manifest.states) {
            val out = stateOut.getValue(pair.output)
            val into = stateIn.getValue(pair.input)
            out.rewind()
            into.clear()
            into.put(out)
            into.rewind()
        }
        logitsBuffer.position(logitsSpec.size - vocabulary.size)
        logitsBuffer.get(logits)
        fed.add(id)
        return (SystemClock.elapsedRealtimeNanos() - start) / 1e6
    }

    fun idOf(word: String): Int = index[word] ?: unknown

    /** The k most likely next words starting with [prefix], no special token. */
    fun topK(k: Int, prefix: String = ""): List<Suggestion> {
        val best = ArrayList<Int>(k + 1)
        for (i in vocabulary.indices) {
            if (i in specialIds) continue
            if (prefix.isNotEmpty() && !vocabulary[i].startsWith(prefix)) continue
            if (best.size < k || logits[i] > logits[best.last()]) {
                best.add(i)
                best.sortByDescending { logits[it] }
                if (best.size > k) best.removeAt(best.size - 1)
            }
        }
        val max = logits.maxOrNull() ?: 0f
        var sum = 0.0
        for (v in logits) sum += exp((v - max).toDouble())
        return best.map { Suggestion(vocabulary[it], it, (exp((logits[it] - max).toDouble()) / sum).toFloat()) }
    }

    override fun close() = interpreter.close()

    companion object {
        /** Loads the first `*.manifest.json` in the app's assets, its .tflite and vocabulary. */
        fun fromAssets(context: Context, numThreads: Int = 1): NextWordModel {
            val assets = context.assets
            val name = assets.list("")?.sorted()?.firstOrNull { it.endsWith(".manifest.json") }
                ?: error("no *.manifest.json in the app's assets: see examples/android/README.md")
            val manifest = ModelManifest.parse(assets.open(name).bufferedReader().use { it.readText() })
            val vocabulary = assets.open(manifest.languageModel.vocabularyFile).bufferedReader().useLines { lines ->
                lines.toList()
            }.let { if (it.isNotEmpty() && it.last().isEmpty()) it.dropLast(1) else it }
            manifest.languageModel.vocabularySize?.let {
                require(vocabulary.size == it) { "vocabulary has ${vocabulary.size} words, the manifest says $it" }
            }
            val model = mapAsset(assets, manifest.modelFile)
            require(model.capacity().toLong() == manifest.modelBytes) {
                "${manifest.modelFile} has ${model.capacity()} bytes, the manifest says ${manifest.modelBytes}"
            }
            val options = Interpreter.Options().setNumThreads(numThreads)
            return NextWordModel(manifest, vocabulary, Interpreter(model, options))
        }

        private fun mapAsset(assets: AssetManager, name: String): MappedByteBuffer =
            assets.openFd(name).use { fd ->
                FileInputStream(fd.fileDescriptor).channel.use { channel ->
                    channel.map(FileChannel.MapMode.READ_ONLY, fd.startOffset, fd.declaredLength)
                }
            }

        private fun dataType(dtype: String): DataType = when (dtype) {
            "float32" -> DataType.FLOAT32
            "int32" -> DataType.INT32
            "int8" -> DataType.INT8
            "uint8" -> DataType.UINT8
            "int64" -> DataType.INT64
            else -> error("unsupported dtype $dtype")
        }

        private fun directFloats(n: Int): FloatBuffer =
            ByteBuffer.allocateDirect(4 * n).order(ByteOrder.nativeOrder()).asFloatBuffer()

        private fun directInts(n: Int): IntBuffer =
            ByteBuffer.allocateDirect(4 * n).order(ByteOrder.nativeOrder()).asIntBuffer()
    }
}
