"""nasforge.oneshot"""
