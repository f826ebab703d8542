"""A light model of C source, read without a compiler: comments and strings blanked
(`strip`), the `gcc -E` lines of the candidate (`preprocess`), functions, loops and
calls (`model`), declarations and accumulators (`declarations`), integer constant
expressions (`constexpr`). The technique detector and the static checks read it."""
