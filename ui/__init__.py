"""Streamlit-side helpers of the dashboard (the library, ``mtprune``, never imports streamlit)."""
