"""Results in, tables and pictures out. Never imports ray.

``load`` reads a run's Parquet tables; ``cells``, ``anova``, ``plateau``,
``overfitting``, ``pareto`` and ``scaling`` are pure DataFrame-to-DataFrame
analyses; ``interactions``, ``learning_curves``, ``pareto`` and ``overlays``
pair a pure ``get_*_info`` with a thin ``get_*_plot``; ``report`` writes
``DIR/report/`` (``report.write_report``).
"""
