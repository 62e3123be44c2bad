"""nasforge.report"""
