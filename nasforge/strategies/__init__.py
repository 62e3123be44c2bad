"""nasforge.strategies"""
