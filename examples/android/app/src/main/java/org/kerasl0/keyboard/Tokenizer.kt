package org.kerasl0.keyboard

/**
 * Penn Treebank's text conventions, as the demo model was trained on them:
 * lower case, numbers as "N", contractions split ("do n't", "it 's"), no
 * punctuation; '.', '!' and '?' end a sentence.
 */
object Tokenizer {
    private val sentenceEnd = Regex("[.!?]+")
    private val notWordChar = Regex("[^a-z0-9'&$-]")
    private val contraction = Regex("^(.+?)(n't|'s|'re|'ve|'ll|'d|'m)$")
    private val number = Regex("^[0-9][0-9.,:/-]*$")

    /** The complete words of the sentence being typed, and the word being typed. */
    data class Current(val words: List<String>, val prefix: String)

    fun current(text: String): Current {
        val sentence = text.lowercase().split(sentenceEnd).last()
        val endsInWord = sentence.isNotEmpty() && !sentence.last().isWhitespace()
        val raw = sentence.split(Regex("\\s+")).filter { it.isNotEmpty() }.toMutableList()
        var prefix = if (endsInWord && raw.isNotEmpty()) raw.removeAt(raw.size - 1).replace(notWordChar, "") else ""
        if (number.matches(prefix)) prefix = ""
        val words = mutableListOf<String>()
        for (r in raw) {
            val w = r.replace(notWordChar, "")
            if (w.isEmpty()) continue
            if (number.matches(w)) {
                words.add("N")
                continue
            }
            val m = contraction.matchEntire(w)
            if (m != null) {
                words.add(m.groupValues[1])
                words.add(m.groupValues[2])
            } else {
                words.add(w)
            }
        }
        return Current(words, prefix)
    }
}
