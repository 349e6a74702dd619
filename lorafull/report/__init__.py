"""All run folders of a study -> tables and plots in STUDY_DIR/report/.

    python -m lorafull.report STUDY_DIR
"""
from lorafull._exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    'columns_of': 'build',
    'write_markdown': 'build',
    'write_csv': 'build',
    'build_report': 'build',
    'write_html': 'html',
    'COST_COLUMNS': 'rows',
    'PAPER_ORDER': 'rows',
    'training_metrics': 'rows',
    'loss_curve': 'rows',
    'run_row': 'rows',
    'order_categories': 'rows',
    'collect_rows': 'rows',
    'plot_scores': 'plots',
    'plot_score_vs_cost': 'plots',
    'plot_categories': 'plots',
    'plot_losses': 'plots',
})
