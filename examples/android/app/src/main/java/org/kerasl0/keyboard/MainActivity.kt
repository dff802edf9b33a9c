package org.kerasl0.keyboard

import android.os.Bundle
import android.text.Editable
import android.text.TextWatcher
import android.widget.Button
import android.widget.EditText
import android.widget.TextView
import androidx.appcompat.app.AppCompatActivity
import androidx.lifecycle.lifecycleScope
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.ExperimentalCoroutinesApi
import kotlinx.coroutines.Job
import kotlinx.coroutines.launch
import kotlinx.coroutines.withContext

/**
 * The next-word keyboard: as the user types, the words of the current
 * sentence are fed to the streaming model one per call, the states carried
 * from call to call (reset at a new sentence), and the top 3 next words are
 * shown with the latency of each call.
 */
class MainActivity : AppCompatActivity() {
    private var model: NextWordModel? = null
    // Every model call runs on this one thread, in order.
    @OptIn(ExperimentalCoroutinesApi::class)
    private val modelThread = Dispatchers.Default.limitedParallelism(1)
    private var pending: Job? = null
    private val latencies = mutableListOf<Double>()

    private lateinit var info: TextView
    private lateinit var text: EditText
    private lateinit var latency: TextView
    private lateinit var contextView: TextView
    private lateinit var buttons: List<Button>

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_main)
        info = findViewById(R.id.info)
        text = findViewById(R.id.text)
        latency = findViewById(R.id.latency)
        contextView = findViewById(R.id.context)
        buttons = listOf(R.id.suggestion0, R.id.suggestion1, R.id.suggestion2).map { findViewById(it) }

        lifecycleScope.launch {
            try {
                val loaded = withContext(modelThread) { NextWordModel.fromAssets(applicationContext) }
                model = loaded
                val m = loaded.manifest
                info.text = "${m.modelFile} (${m.modelBytes / 1024} KiB, quantization ${m.quantization}) · " +
                    "signature \"${m.signature}\" · ${loaded.vocabulary.size} words · states " +
                    m.states.joinToString { "${it.input} ${it.shape.joinToString("×")}" }
                text.isEnabled = true
                text.addTextChangedListener(object : TextWatcher {
                    override fun beforeTextChanged(s: CharSequence?, start: Int, count: Int, after: Int) {}
                    override fun onTextChanged(s: CharSequence?, start: Int, before: Int, count: Int) {}
                    override fun afterTextChanged(s: Editable?) = update(s?.toString().orEmpty())
                })
                update("")
            } catch (e: Exception) {
                info.text = "Cannot load the model: ${e.message}"
            }
        }
    }

    /** Brings the states to the current sentence (only the new words when the
     * text grew, else from zero states) and shows the suggestions. */
    private fun update(current: String) {
        val m = model ?: return
        pending?.cancel()
        pending = lifecycleScope.launch {
            val (words, prefix) = Tokenizer.current(current)
            val (suggestions, times) = withContext(modelThread) {
                val wanted = listOf(m.endOfSentence) + words.map(m::idOf)
                val carried = m.fed.isNotEmpty() && m.fed.size <= wanted.size &&
                    m.fed.indices.all { m.fed[it] == wanted[it] }
                if (!carried) m.reset()
                val times = (m.fed.size until wanted.size).map { m.step(wanted[it]) }
                m.topK(3, prefix) to times
            }
            latencies.addAll(times)
            show(suggestions, prefix, words)
        }
    }

    private fun show(suggestions: List<Suggestion>, prefix: String, words: List<String>) {
        buttons.forEachIndexed { i, button ->
            val s = suggestions.getOrNull(i)
            button.text = s?.word ?: ""
            button.isEnabled = s != null
            button.setOnClickListener { if (s != null) accept(s.word, prefix) }
        }
        if (latencies.isNotEmpty()) {
            val sorted = latencies.sorted()
            val median = sorted[sorted.size / 2]
            latency.text = "last token %.3f ms · median %.3f ms over %d tokens".format(
                latencies.last(), median, latencies.size,
            )
        }
        contextView.text = "context: <eos> ${words.joinToString(" ")}" + if (prefix.isNotEmpty()) " [$prefix…]" else ""
    }

    private fun accept(word: String, prefix: String) {
        val current = text.text.toString()
        val base = if (prefix.isNotEmpty()) current.replace(Regex("\\S+$"), "") else current
        text.setText("$base$word ")
        text.setSelection(text.text.length)
    }

    override fun onDestroy() {
        super.onDestroy()
        model?.close()
    }
}
